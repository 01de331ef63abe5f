"""Embedded English→Spanish corpus generated from a small grammar of real Spanish, with gold word alignments.

The grammar covers what makes Spanish different from English at the level a first attention model can
learn in minutes on a CPU:

* gender/number agreement of articles, determiners and adjectives ("las casas rojas");
* adjectives after the noun ("the red car" → "el coche rojo");
* object clitics before the verb ("I love you" → "te quiero", "she sees them" → "ella los ve");
* pro-drop for "I"/"you"/"we" (the verb ending carries the person), kept subject pronouns otherwise;
* present and preterite for every person, copula *ser* (present/imperfect), *estar* in "where" questions;
* personal "a" before animate objects ("I see the boy" → "veo al niño");
* negation ("no te quiero"), yes/no questions ("¿me quieres?") and wh-questions ("¿qué compró ella?");
* optionally, long sentences of coordinated statements ("A and B and C" → "A y B y C", with "e" before an
  /i/ sound: "y ella", "e hice"), for the length study of Bahdanau et al. (2015): :func:`coordinate`,
  ``max_clauses`` of :func:`generate_aligned_corpus`, :func:`long_sentence_buckets`.

Sentences are lower case (except "I") without a final period so the corpus stays short and regular; the
mapping English→Spanish is a function (see :mod:`tasks.translation.lexicon` for the choices) and each
Spanish sentence is produced by only one English sentence, so the reverse direction is a function too.

**Gold alignments.** The grammar knows which English word produced each Spanish word, so every pair comes
with gold links (:class:`AlignedPair`) between the *whitespace words* of the two sentences (``en.split()`` and
``es.split()`` indices; "¿" and "?" ride on the words they touch), in the *sure* / *possible* scheme of Och &
Ney (2003) that :mod:`core.metrics.alignment` scores. Sure links are the translations of content words; possible
links mark words whose counterpart is genuinely spread over several words or missing:

================================================  =========================================  ==========
English word(s)                                   Spanish word(s)                            link
================================================  =========================================  ==========
noun, adjective, main verb, "and", adverb         its translation ("car"–"coche",            sure
                                                  "love"–"quiero", "and"–"y"/"e")
determiner ("the", "a", "some", "my", "this")     the agreeing article/determiner            sure
"the" before an animate object                    "al" (the article fused with personal "a") possible
subject pronoun "he"/"she"/"they", "who"          "él"/"ella"/"ellos", "quién"               sure
subject "I"/"you"/"we" (dropped in Spanish)       the verb (its ending carries the person)   possible
object pronoun ("me", "you", "him", "them")       its clitic ("me", "te", "lo", "los"):      sure
                                                  here always the one translation, however
                                                  far the clitic moves
"do"/"does"/"did" (question or negation)          the verb (tense and person live there)     possible
"don't"/"doesn't"/"didn't"                        "no" (the "n't")                           sure
"am"/"is"/"was"/... (copula), "isn't"/"aren't"    "soy"/"es"/"era"/... ("estar" in "where"   sure
                                                  questions); "isn't" also "no"
"not" of "am not"                                 "no"                                       sure
verb particle ("look *for*", "listen *to*")       the verb ("buscar", "escuchar")            possible
main verb, verb particle                          personal "a"/"al" before an animate        possible
                                                  object (the verb's case marker)
"where", "what"                                   "dónde", "qué"                             sure
"every day" / "last night"                        "todos los días" (every–todos, day–días    sure /
                                                  sure; "los" possible with both) /          possible
                                                  "anoche" (both words sure)
the last English word of a question ("…?")        the first ("¿…") and last ("…?") Spanish   possible
                                                  words: the question marks translate each
                                                  other
================================================  =========================================  ==========

Every Spanish word has at least one link. ``possible`` lists only the links that are not sure (AER counts
every sure link as possible too).

Example:
    >>> pairs = generate_corpus(n_pairs=1000, seed=0)
    >>> ("I love you", "te quiero") in pairs
    True
    >>> aligned_clause(subject_pronoun(0), verb_by_en("love"), clitic=1)
    AlignedPair(en='I love you', es='te quiero', sure=((1, 1), (2, 0)), possible=((0, 1),))
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from core.errors import ConfigError
from tasks.translation.words import (
    ADJ_LIST,
    ADVERB_LINKS,
    ADVERBS,
    ANIMAL_SUBJECT_VERBS,
    DETERMINERS,
    EN_BE_PAST,
    EN_BE_PRESENT,
    ESTAR_IMPERFECT,
    ESTAR_PRESENT,
    NOUN_LIST,
    OBJECT_PRONOUNS,
    P1P,
    P1S,
    P2S,
    P3P,
    P3S,
    SER_IMPERFECT,
    SER_PRESENT,
    SUBJECT_PRONOUNS,
    THING_TAGS,
    VERB_LIST,
    Adjective,
    Noun,
    Phrase,
    PhraseLink,
    Verb,
    adjective_by_en,
    lexicon_size,
    noun_by_en,
    verb_by_en,
)

__all__ = [
    "LENGTH_BUCKETS",
    "AlignedPair",
    "Link",
    "Pair",
    "adjective_by_en",
    "aligned_clause",
    "aligned_copula",
    "aligned_what_question",
    "aligned_where_question",
    "aligned_who_question",
    "anchor_pairs",
    "bucket_label",
    "clause",
    "coordinate",
    "copula",
    "generate_aligned_corpus",
    "generate_corpus",
    "lexicon_size",
    "long_sentence_buckets",
    "noun_by_en",
    "noun_phrase",
    "phrase_pair",
    "split_corpus",
    "subject_pronoun",
    "verb_by_en",
    "what_question",
    "where_question",
    "who_question",
]

Pair = tuple[str, str]
Link = tuple[int, int]  # (English word, Spanish word): indices into en.split() and es.split()


class AlignedPair(NamedTuple):
    """An (english, spanish) pair with its gold word alignment.

    As a 4-tuple it is one item of what :func:`tasks.translation.alignment.alignment_scores` takes for the
    en→es direction.

    Attributes:
        en: the English sentence.
        es: the Spanish sentence.
        sure: sorted ``(English word, Spanish word)`` links over ``en.split()`` / ``es.split()``.
        possible: sorted links that are possible but not sure (disjoint from ``sure``).
    """

    en: str
    es: str
    sure: tuple[Link, ...]
    possible: tuple[Link, ...]

    @property
    def pair(self) -> Pair:
        """``(en, es)`` without the links."""
        return self.en, self.es


class _Sentence:
    """Both sides' words of a sentence under construction, and the gold links between them.

    Each side is appended in its own word order (the two orders differ: clitics, adjectives, questions), so a
    part is added to each side separately and linked by the word indices the additions return.
    """

    def __init__(self) -> None:
        self.en: list[str] = []
        self.es: list[str] = []
        self.links: dict[Link, bool] = {}  # link -> sure

    @staticmethod
    def _append(side: list[str], text: str) -> list[int]:
        words = text.split()
        side.extend(words)
        return list(range(len(side) - len(words), len(side)))

    def add_en(self, text: str) -> list[int]:
        """Append the words of ``text`` (possibly none) to the English side; returns their indices."""
        return self._append(self.en, text)

    def add_es(self, text: str) -> list[int]:
        """Append the words of ``text`` (possibly none) to the Spanish side; returns their indices."""
        return self._append(self.es, text)

    def link(self, en: Sequence[int], es: Sequence[int], sure: bool) -> None:
        """Link every word of ``en`` with every word of ``es``; a sure link is never made possible again."""
        for i in en:
            for j in es:
                self.links[(i, j)] = self.links.get((i, j), False) or sure

    def link_phrase(self, links: Iterable[PhraseLink], en: Sequence[int], es: Sequence[int]) -> None:
        """Add a phrase's own links, given where its words landed on each side."""
        for i, j, sure in links:
            self.link([en[i]], [es[j]], sure)

    def finish(self, question: bool) -> AlignedPair:
        """The finished pair; a question gets "?" on the last English word and "¿…?" around the Spanish."""
        en, es, links = list(self.en), list(self.es), dict(self.links)
        if question:
            # The English "?" has two Spanish counterparts, on the first and the last Spanish word.
            for j in (0, len(es) - 1):
                links.setdefault((len(en) - 1, j), False)
            en[-1] += "?"
            es[0] = "¿" + es[0]
            es[-1] += "?"
        sure = tuple(sorted(k for k, v in links.items() if v))
        possible = tuple(sorted(k for k, v in links.items() if not v))
        return AlignedPair(" ".join(en), " ".join(es), sure, possible)


# ---------------------------------------------------------------------------------------------------
# Phrase rendering (deterministic: every function below is pure given its arguments)
# ---------------------------------------------------------------------------------------------------


def _article_an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(noun: Noun, det: int = 0, plural: bool = False, adj: Adjective | None = None) -> Phrase:
    """Render a determiner + (adjective) + noun phrase in both languages.

    Args:
        noun: the head noun.
        det: index into :data:`DETERMINERS` (0 = "the").
        plural: plural number.
        adj: optional adjective (English before the noun, Spanish after it, agreeing).

    Returns:
        A third-person :class:`Phrase`; its links pair the determiners, nouns and adjectives (all sure).
    """
    en_det_sg, en_det_pl, es_dets = DETERMINERS[det]
    en_noun = noun.en_pl if plural else noun.en_sg
    en_words = ([adj.en] if adj else []) + [en_noun]
    en_det = en_det_pl if plural else en_det_sg
    if en_det == "a":
        en_det = _article_an(en_words[0])
    es_det = es_dets[(2 if plural else 0) + (1 if noun.gender == "f" else 0)]
    es_words = [es_det, noun.es_pl if plural else noun.es_sg]
    # English "det [adj] noun", Spanish "det noun [adj]".
    links: list[PhraseLink] = [(0, 0, True), (len(en_words), 1, True)]
    if adj:
        es_words.append(adj.es[(noun.gender, plural)])
        links.append((1, 2, True))
    animate = bool(noun.tags & {"person", "animal"})
    return Phrase(
        " ".join([en_det] + en_words),
        " ".join(es_words),
        P3P if plural else P3S,
        noun.gender,
        plural,
        animate,
        links=tuple(links),
    )


def subject_pronoun(index: int) -> Phrase:
    """Subject pronoun ``SUBJECT_PRONOUNS[index]`` as a :class:`Phrase` (no link when Spanish drops it)."""
    en, es, person, gender, plural = SUBJECT_PRONOUNS[index]
    return Phrase(en, es, person, gender, plural, animate=True, pronoun=True, links=((0, 0, True),) if es else ())


def phrase_pair(p: Phrase) -> AlignedPair:
    """A phrase on its own as an aligned pair ("the red car" → "el coche rojo")."""
    s = _Sentence()
    s.link_phrase(p.links, s.add_en(p.en), s.add_es(p.es))
    return s.finish(question=False)


def _en_verb(verb: Verb, person: int, tense: str, negative: bool, question: bool) -> tuple[str, str]:
    """English auxiliary (may be "") and main verb group for a clause."""
    third = person == P3S
    if negative or question:
        aux = {"present": "does" if third else "do", "past": "did"}[tense]
        if negative:
            aux += "n't"
        main = verb.en_base
    else:
        aux = ""
        main = verb.en_past if tense == "past" else (verb.en_3sg if third else verb.en_base)
    return aux, main


def _es_object(verb: Verb, obj: Phrase) -> tuple[str, tuple[PhraseLink, ...], int | None]:
    """The Spanish object, its links re-indexed to those words, and where the personal "a" is (or None)."""
    if not (verb.personal_a and obj.animate):
        return obj.es, obj.links, None
    # Personal "a" before animate direct objects; "a el" contracts to "al", which then holds the article
    # too: its link to "the" is only possible (the word is half preposition).
    if obj.es.startswith("el "):
        return "al " + obj.es[3:], tuple((i, j, sure and j != 0) for i, j, sure in obj.links), 0
    return "a " + obj.es, tuple((i, j + 1, sure) for i, j, sure in obj.links), 0


def _link_subject(s: _Sentence, subject: Phrase, en: list[int], es: list[int], verb: list[int]) -> None:
    """A subject's links; a dropped pronoun ("I", "you", "we") is possibly linked to the verb ending it lives on."""
    s.link_phrase(subject.links, en, es)
    if subject.pronoun and not subject.es:
        s.link(en, verb, sure=False)


def _link_adverb(s: _Sentence, en: list[int], es: list[int]) -> None:
    if en:
        en_text = " ".join(s.en[i] for i in en)
        s.link_phrase(ADVERB_LINKS.get(en_text, ((0, 0, True),)), en, es)


def _clause(
    subject: Phrase,
    verb: Verb,
    obj: Phrase | None,
    clitic: int | None,
    tense: str,
    negative: bool,
    question: bool,
    adverb: int | None,
) -> _Sentence:
    """The words and links of :func:`aligned_clause`, before question marks."""
    aux, main = _en_verb(verb, subject.person, tense, negative, question)
    en_obj, es_clitic, es_obj, personal_a = "", "", "", None
    obj_links: tuple[PhraseLink, ...] = ()
    if clitic is not None:
        en_obj, es_clitic, _ = OBJECT_PRONOUNS[clitic]
    elif obj is not None:
        en_obj = obj.en
        es_obj, obj_links, personal_a = _es_object(verb, obj)
    en_adv, es_adv = ADVERBS[tense][adverb] if adverb is not None else ("", "")
    table = verb.preterite if tense == "past" else verb.present

    s = _Sentence()
    # English: "subject [aux] main [particle] [object] [adverb]", the auxiliary first in a question.
    if question:
        e_aux, e_subj = s.add_en(aux), s.add_en(subject.en)
    else:
        e_subj, e_aux = s.add_en(subject.en), s.add_en(aux)
    e_main, e_part, e_obj, e_adv = s.add_en(main), s.add_en(verb.particle), s.add_en(en_obj), s.add_en(en_adv)
    # Spanish: "[subject] [no] [clitic] verb [object] [adverb]".
    s_subj, s_no, s_clitic = s.add_es(subject.es), s.add_es("no" if negative else ""), s.add_es(es_clitic)
    s_verb, s_obj, s_adv = s.add_es(table[subject.person]), s.add_es(es_obj), s.add_es(es_adv)

    _link_subject(s, subject, e_subj, s_subj, s_verb)
    s.link(e_main, s_verb, sure=True)
    s.link(e_part, s_verb, sure=False)  # "look for" is "buscar" as a whole
    s.link(e_aux, s_verb, sure=False)  # "do"/"did" only carry tense and person, which the verb ending has
    s.link(e_aux, s_no, sure=True)  # "don't": its "n't" is the "no"
    s.link(e_obj, s_clitic, sure=True)
    s.link_phrase(obj_links, e_obj, s_obj)
    if personal_a is not None:
        # The personal "a" marks the verb's animate object ("for"/"to" of "look for"/"listen to" too).
        s.link(e_main + e_part, [s_obj[personal_a]], sure=False)
    _link_adverb(s, e_adv, s_adv)
    return s


def aligned_clause(
    subject: Phrase,
    verb: Verb,
    obj: Phrase | None = None,
    clitic: int | None = None,
    tense: str = "present",
    negative: bool = False,
    question: bool = False,
    adverb: int | None = None,
) -> AlignedPair:
    """Render a full clause with its gold links (arguments: :func:`clause`).

    Example:
        >>> aligned_clause(subject_pronoun(0), verb_by_en("see"), obj=noun_phrase(noun_by_en("boy")))
        AlignedPair(en='I see the boy', es='veo al niño', sure=((1, 0), (3, 2)), possible=((0, 0), (1, 1), (2, 1)))
    """
    return _clause(subject, verb, obj, clitic, tense, negative, question, adverb).finish(question)


def clause(
    subject: Phrase,
    verb: Verb,
    obj: Phrase | None = None,
    clitic: int | None = None,
    tense: str = "present",
    negative: bool = False,
    question: bool = False,
    adverb: int | None = None,
) -> Pair:
    """Render a full clause.

    Args:
        subject: subject phrase (pronoun or noun phrase).
        verb: the verb.
        obj: a noun-phrase object, or None.
        clitic: index into :data:`OBJECT_PRONOUNS` for a pronoun object ("you" → "te"), or None.
        tense: "present" or "past" (Spanish preterite).
        negative: negate ("don't" / "no").
        question: yes/no question ("do you ...?" / "¿...?").
        adverb: index into ``ADVERBS[tense]``, or None.

    Returns:
        (english, spanish).

    Example:
        >>> clause(subject_pronoun(0), verb_by_en("love"), clitic=1)
        ('I love you', 'te quiero')
    """
    return aligned_clause(subject, verb, obj, clitic, tense, negative, question, adverb).pair


def aligned_copula(
    subject: Phrase, adj: Adjective, tense: str = "present", negative: bool = False, question: bool = False
) -> AlignedPair:
    """:func:`copula` with its gold links."""
    be = (EN_BE_PAST if tense == "past" else EN_BE_PRESENT)[subject.person]
    if subject.en == "I" and tense == "past":
        be = "was"
    if negative:
        # "aren't I" is the idiomatic negative question; "am not" in statements.
        be = ("aren't" if question else "am not") if be == "am" else be + "n't"
    ser = (SER_IMPERFECT if tense == "past" else SER_PRESENT)[subject.person]
    s = _Sentence()
    if question:
        e_be, e_subj = s.add_en(be), s.add_en(subject.en)
    else:
        e_subj, e_be = s.add_en(subject.en), s.add_en(be)
    e_adj = s.add_en(adj.en)
    s_subj, s_no = s.add_es(subject.es), s.add_es("no" if negative else "")
    s_ser, s_adj = s.add_es(ser), s.add_es(adj.es[(subject.gender, subject.plural)])
    _link_subject(s, subject, e_subj, s_subj, s_ser)
    if len(e_be) == 2:  # "am not"
        s.link(e_be[:1], s_ser, sure=True)
        s.link(e_be[1:], s_no, sure=True)
    else:  # "is", or "isn't" = "es" and "no" at once
        s.link(e_be, s_ser + s_no, sure=True)
    s.link(e_adj, s_adj, sure=True)
    return s.finish(question)


def copula(
    subject: Phrase, adj: Adjective, tense: str = "present", negative: bool = False, question: bool = False
) -> Pair:
    """Render "X is ADJ" with *ser* (present) or its imperfect (past), adjective agreeing with X."""
    return aligned_copula(subject, adj, tense, negative, question).pair


def aligned_where_question(subject: Phrase, tense: str = "present") -> AlignedPair:
    """:func:`where_question` with its gold links."""
    be = (EN_BE_PAST if tense == "past" else EN_BE_PRESENT)[subject.person]
    if subject.en == "I" and tense == "past":
        be = "was"
    estar = (ESTAR_IMPERFECT if tense == "past" else ESTAR_PRESENT)[subject.person]
    s = _Sentence()
    e_where, e_be, e_subj = s.add_en("where"), s.add_en(be), s.add_en(subject.en)
    s_where, s_estar, s_subj = s.add_es("dónde"), s.add_es(estar), s.add_es(subject.es)
    s.link(e_where, s_where, sure=True)
    s.link(e_be, s_estar, sure=True)
    _link_subject(s, subject, e_subj, s_subj, s_estar)
    return s.finish(question=True)


def where_question(subject: Phrase, tense: str = "present") -> Pair:
    """ "where is the cat?" → "¿dónde está el gato?" (subject pronoun after the verb)."""
    return aligned_where_question(subject, tense).pair


_WHO = Phrase("who", "quién", P3S, "m", False, animate=True, pronoun=True, links=((0, 0, True),))


def aligned_who_question(
    verb: Verb, obj: Phrase | None = None, clitic: int | None = None, tense: str = "present"
) -> AlignedPair:
    """:func:`who_question` with its gold links."""
    return _clause(_WHO, verb, obj, clitic, tense, False, False, None).finish(question=True)


def who_question(verb: Verb, obj: Phrase | None = None, clitic: int | None = None, tense: str = "present") -> Pair:
    """ "who loves you?" → "¿quién te quiere?" (third person singular)."""
    return aligned_who_question(verb, obj, clitic, tense).pair


def aligned_what_question(subject: Phrase, verb: Verb, tense: str = "present") -> AlignedPair:
    """:func:`what_question` with its gold links."""
    aux = "did" if tense == "past" else ("does" if subject.person == P3S else "do")
    table = verb.preterite if tense == "past" else verb.present
    s = _Sentence()
    e_what, e_aux, e_subj = s.add_en("what"), s.add_en(aux), s.add_en(subject.en)
    e_verb, e_part = s.add_en(verb.en_base), s.add_en(verb.particle)
    s_what, s_verb, s_subj = s.add_es("qué"), s.add_es(table[subject.person]), s.add_es(subject.es)
    s.link(e_what, s_what, sure=True)
    s.link(e_verb, s_verb, sure=True)
    s.link(e_aux + e_part, s_verb, sure=False)
    _link_subject(s, subject, e_subj, s_subj, s_verb)
    return s.finish(question=True)


def what_question(subject: Phrase, verb: Verb, tense: str = "present") -> Pair:
    """ "what did she buy?" → "¿qué compró ella?" (subject after the verb in Spanish)."""
    return aligned_what_question(subject, verb, tense).pair


def _spanish_and(next_word: str) -> str:
    """ "y", or "e" before a word starting with the sound /i/ ("e invito", "e hice"; but "y hielo")."""
    w = next_word.lower()
    starts_with_i = w.startswith(("i", "í")) or (w.startswith("hi") and w[2:3] not in tuple("aeiouáéíóú"))
    return "e" if starts_with_i else "y"


def coordinate(parts: Sequence[AlignedPair]) -> AlignedPair:
    """Join statements into one sentence, "A and B and C" → "A y B y C", links carried over.

    Args:
        parts: statements (no question marks), each with its links.

    Returns:
        The joined pair: each part's links moved by the words before it, "and" surely linked to "y"/"e".

    Example:
        >>> a = aligned_clause(subject_pronoun(0), verb_by_en("love"), clitic=1)
        >>> b = aligned_clause(subject_pronoun(2), verb_by_en("make"), obj=noun_phrase(noun_by_en("cake")))
        >>> coordinate([b, a]).pair
        ('he makes the cake and I love you', 'él hace el pastel y te quiero')
    """
    en: list[str] = []
    es: list[str] = []
    sure: list[Link] = []
    possible: list[Link] = []
    for k, part in enumerate(parts):
        if "?" in part.en:
            raise ValueError(f"coordinate joins statements, not questions: {part.en!r}")
        if k:
            sure.append((len(en), len(es)))
            en.append("and")
            es.append(_spanish_and(part.es.split()[0]))
        di, dj = len(en), len(es)
        sure += [(i + di, j + dj) for i, j in part.sure]
        possible += [(i + di, j + dj) for i, j in part.possible]
        en += part.en.split()
        es += part.es.split()
    return AlignedPair(" ".join(en), " ".join(es), tuple(sorted(sure)), tuple(sorted(possible)))


def _anchors() -> list[AlignedPair]:
    return [
        aligned_clause(subject_pronoun(0), verb_by_en("love"), clitic=1),  # I love you → te quiero
        phrase_pair(noun_phrase(noun_by_en("car"), adj=adjective_by_en("red"))),  # the red car → el coche rojo
        aligned_clause(subject_pronoun(3), verb_by_en("see"), clitic=5),  # she sees them → ella los ve
        aligned_clause(subject_pronoun(1), verb_by_en("love"), clitic=0, question=True),  # do you love me?
        aligned_clause(subject_pronoun(0), verb_by_en("love"), clitic=1, negative=True),  # I don't love you
    ]


def anchor_pairs() -> list[Pair]:
    """Pairs always present in the training split (the examples the docs and the CLI show)."""
    return [p.pair for p in _anchors()]


# ---------------------------------------------------------------------------------------------------
# Random sampling
# ---------------------------------------------------------------------------------------------------


class _Sampler:
    """Draws random sentences; all randomness comes from one seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.nouns_by_tag: dict[str, list[Noun]] = {}
        for n in NOUN_LIST:
            for t in n.tags:
                self.nouns_by_tag.setdefault(t, []).append(n)
        self.transitive = [v for v in VERB_LIST if v.obj_tags]
        self.intransitive = [v for v in VERB_LIST if v.intransitive]
        self.clitic_verbs = [v for v in VERB_LIST if "person" in v.obj_tags and v.personal_a]
        self.thing_verbs = [v for v in VERB_LIST if v.obj_tags & THING_TAGS]

    def np(self, tags: frozenset[str] | set[str], adj_p: float = 0.5) -> Phrase:
        r = self.rng
        pool = [n for t in sorted(tags) for n in self.nouns_by_tag.get(t, [])]
        noun = r.choice(pool)
        adj = None
        if r.random() < adj_p:
            adjs = [a for a in ADJ_LIST if a.tags & noun.tags]
            adj = r.choice(adjs) if adjs else None
        return noun_phrase(noun, det=r.randrange(len(DETERMINERS)), plural=r.random() < 0.4, adj=adj)

    def subject(self, verb: Verb) -> Phrase:
        r = self.rng
        if r.random() < 0.5:
            return subject_pronoun(r.randrange(len(SUBJECT_PRONOUNS)))
        tags = {"person", "animal"} if verb.en_base in ANIMAL_SUBJECT_VERBS else {"person"}
        return self.np(tags, adj_p=0.3)

    def modifiers(self) -> dict:
        r = self.rng
        tense = r.choice(["present", "past"])
        return {
            "tense": tense,
            "negative": r.random() < 0.25,
            "question": r.random() < 0.2,
            "adverb": r.randrange(3) if r.random() < 0.25 else None,
        }

    def sentence(self) -> AlignedPair:
        """One sentence of any kind (phrase, statement, question)."""
        kind = self.rng.choices(
            ["np", "svo", "clitic", "intr", "cop", "where", "who", "what"],
            weights=[8, 34, 16, 10, 14, 5, 7, 6],
        )[0]
        return self._render(kind)

    def statement(self) -> AlignedPair:
        """One statement (a clause that :func:`coordinate` can join): never a question or a bare phrase."""
        kind = self.rng.choices(["svo", "clitic", "intr", "cop"], weights=[34, 16, 10, 14])[0]
        return self._render(kind, questions=False)

    def coordinated(self, n_clauses: int) -> AlignedPair:
        """``n_clauses`` statements joined by "and" / "y"."""
        return coordinate([self.statement() for _ in range(n_clauses)])

    def _modifiers(self, questions: bool) -> dict:
        m = self.modifiers()  # drawn in full either way: the same draws as always for sentence()
        if not questions:
            m["question"] = False
        return m

    def _render(self, kind: str, questions: bool = True) -> AlignedPair:
        r = self.rng
        if kind == "np":
            return phrase_pair(self.np(THING_TAGS | {"person", "animal"}, adj_p=0.7))
        if kind == "svo":
            verb = r.choice(self.transitive)
            subj = self.subject(verb)
            obj = self.np(verb.obj_tags, adj_p=0.35)
            return aligned_clause(subj, verb, obj=obj, **self._modifiers(questions))
        if kind == "clitic":
            verb = r.choice(self.clitic_verbs)
            subj = self.subject(verb)
            # Exclude reflexive-looking combinations ("I see me", "we help us").
            choices = [
                i
                for i, (_, _, p) in enumerate(OBJECT_PRONOUNS)
                if not (p == subj.person and p in (P1S, P2S, P1P)) and not ({p, subj.person} <= {P1S, P1P})
            ]
            return aligned_clause(subj, verb, clitic=r.choice(choices), **self._modifiers(questions))
        if kind == "intr":
            verb = r.choice(self.intransitive)
            return aligned_clause(self.subject(verb), verb, **self._modifiers(questions))
        if kind == "cop":
            m = self._modifiers(questions)
            if r.random() < 0.35:
                subj = subject_pronoun(r.randrange(len(SUBJECT_PRONOUNS)))
                adj = r.choice([a for a in ADJ_LIST if "person" in a.tags])
            else:
                adj = r.choice(ADJ_LIST)
                subj = self.np(adj.tags, adj_p=0.25)
            return aligned_copula(subj, adj, tense=m["tense"], negative=m["negative"], question=m["question"])
        if kind == "where":
            subj = (
                subject_pronoun(r.randrange(len(SUBJECT_PRONOUNS)))
                if r.random() < 0.3
                else self.np(THING_TAGS | {"person", "animal"}, adj_p=0.3)
            )
            return aligned_where_question(subj, tense=r.choice(["present", "past"]))
        if kind == "who":
            verb = r.choice(self.transitive)
            tense = r.choice(["present", "past"])
            if verb in self.clitic_verbs and r.random() < 0.4:
                return aligned_who_question(verb, clitic=r.randrange(len(OBJECT_PRONOUNS)), tense=tense)
            return aligned_who_question(verb, obj=self.np(verb.obj_tags, adj_p=0.3), tense=tense)
        # "what" questions only for verbs that take things.
        verb = r.choice(self.thing_verbs)
        return aligned_what_question(self.subject(verb), verb, tense=r.choice(["present", "past"]))

    def draw(self, max_clauses: int) -> AlignedPair:
        """A sentence of 1..``max_clauses`` clauses (exactly :meth:`sentence` when ``max_clauses`` is 1)."""
        if max_clauses == 1:
            return self.sentence()  # no draw of a clause count: the corpus of max_clauses=1 never changes
        k = self.rng.randint(1, max_clauses)
        return self.sentence() if k == 1 else self.coordinated(k)


def _check_max_clauses(max_clauses: int) -> None:
    if max_clauses < 1:
        raise ConfigError(f"--data.max_clauses must be >= 1, got {max_clauses}")


def generate_aligned_corpus(n_pairs: int = 30_000, seed: int = 0, max_clauses: int = 1) -> list[AlignedPair]:
    """Generate ``n_pairs`` distinct pairs with their gold word alignments, deterministically for ``seed``.

    Both sides are unique across the corpus (a Spanish sentence reachable from two English sentences,
    e.g. "we walk"/"we walked" → "caminamos", is kept only for the first), so splits made from it share
    no sentence in either language. :func:`anchor_pairs` come first.

    Args:
        n_pairs: number of pairs (≥ len(anchor_pairs())).
        seed: RNG seed; the same seed gives the same list on every platform.
        max_clauses: 1 (default) gives the corpus of single sentences; k > 1 joins 1..k statements
            (uniformly many) with :func:`coordinate` in every pair after the anchors.

    Returns:
        List of :class:`AlignedPair`; for ``max_clauses=1`` their ``(en, es)`` are :func:`generate_corpus`.
    """
    _check_max_clauses(max_clauses)
    rng = random.Random(seed)
    sampler = _Sampler(rng)
    pairs: list[AlignedPair] = []
    seen_en: set[str] = set()
    seen_es: set[str] = set()

    def add(p: AlignedPair) -> None:
        if p[0] not in seen_en and p[1] not in seen_es:
            seen_en.add(p[0])
            seen_es.add(p[1])
            pairs.append(p)

    for p in _anchors():
        add(p)
    attempts = 0
    # The sentence space is far larger than any sensible n_pairs; the cap only guards against a
    # lexicon edit that makes it small.
    while len(pairs) < n_pairs and attempts < 50 * n_pairs:
        add(sampler.draw(max_clauses))
        attempts += 1
    if len(pairs) < n_pairs:
        raise ConfigError(
            f"--data.n_pairs={n_pairs} is more than the embedded grammar produces: it gave only "
            f"{len(pairs)} distinct pairs; lower --data.n_pairs"
        )
    return pairs


def generate_corpus(n_pairs: int = 30_000, seed: int = 0, max_clauses: int = 1) -> list[Pair]:
    """Generate ``n_pairs`` distinct (english, spanish) pairs, deterministically for ``seed``.

    The pairs of :func:`generate_aligned_corpus` without their links (see there for the arguments).

    Returns:
        List of ``(english, spanish)`` pairs.
    """
    return [(p[0], p[1]) for p in generate_aligned_corpus(n_pairs, seed, max_clauses)]


# Source-length buckets of the long-sentence study: (shortest, longest or None = no limit), in words.
LENGTH_BUCKETS: tuple[tuple[int, int | None], ...] = ((1, 9), (10, 19), (20, 29), (30, 39), (40, None))


def bucket_label(low: int, high: int | None) -> str:
    """ "10-19", or "40+" for an open bucket."""
    return f"{low}+" if high is None else f"{low}-{high}"


def long_sentence_buckets(
    n_per_bucket: int = 50,
    seed: int = 0,
    exclude: Iterable[Pair] = (),
    buckets: Sequence[tuple[int, int | None]] = LENGTH_BUCKETS,
    max_clauses: int = 12,
    by: str = "en",
) -> dict[str, list[AlignedPair]]:
    """Held-out pairs of every length, ``n_per_bucket`` per source-length bucket (Bahdanau et al.'s figure).

    Sentences of 1..``max_clauses`` coordinated statements are drawn from their own random stream and each
    lands in the bucket of its length until every bucket is full; a pair sharing either side with
    ``exclude`` (the training corpus) or with an earlier pick is skipped.

    Args:
        n_per_bucket: pairs per bucket.
        seed: RNG seed (the stream differs from :func:`generate_aligned_corpus`'s for the same seed).
        exclude: pairs never to return (e.g. every pair of the corpus a model was trained on).
        buckets: ``(shortest, longest)`` word counts, ``longest`` None for no limit.
        max_clauses: most statements in one sentence (12 reach 60 words and more).
        by: the side whose whitespace words are counted, "en" or "es" (the source side).

    Returns:
        ``{bucket_label: [AlignedPair, ...]}`` in the order of ``buckets``.

    Raises:
        ConfigError: the buckets cannot be filled (a bucket longer than ``max_clauses`` statements reach).
    """
    if by not in ("en", "es"):
        raise ValueError(f"by must be 'en' or 'es', got {by!r}")
    _check_max_clauses(max_clauses)
    sampler = _Sampler(random.Random(seed + 1_000_003))
    seen_en: set[str] = set()
    seen_es: set[str] = set()
    for en, es in exclude:
        seen_en.add(en)
        seen_es.add(es)
    out: dict[str, list[AlignedPair]] = {bucket_label(lo, hi): [] for lo, hi in buckets}
    budget = 1000 * n_per_bucket * len(buckets)
    while any(len(v) < n_per_bucket for v in out.values()) and budget > 0:
        budget -= 1
        p = sampler.draw(max_clauses)
        if p.en in seen_en or p.es in seen_es:
            continue
        n = len((p.en if by == "en" else p.es).split())
        for lo, hi in buckets:
            chosen = out[bucket_label(lo, hi)]
            if lo <= n and (hi is None or n <= hi) and len(chosen) < n_per_bucket:
                chosen.append(p)
                seen_en.add(p.en)
                seen_es.add(p.es)
                break
    short = [k for k, v in out.items() if len(v) < n_per_bucket]
    if short:
        raise ConfigError(
            f"could not fill the length buckets {short} with {n_per_bucket} pairs of at most {max_clauses} clauses"
        )
    return out


def split_corpus(
    pairs: Sequence[Pair], n_val: int, n_test: int, seed: int = 0, keep_first: int = 0
) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Shuffle deterministically and split into train/val/test.

    Args:
        pairs: distinct pairs.
        n_val: validation size.
        n_test: test size.
        seed: shuffle seed.
        keep_first: the first ``keep_first`` pairs (anchors) always go to train.

    Returns:
        (train, val, test).
    """
    head, rest = list(pairs[:keep_first]), list(pairs[keep_first:])
    random.Random(seed + 1).shuffle(rest)
    if n_val + n_test >= len(rest):
        raise ConfigError(
            f"--data.val_size + --data.test_size ({n_val}+{n_test}) must be smaller than the "
            f"{len(rest)} pairs of the embedded corpus available for splitting (anchor pairs "
            f"always train); raise --data.n_pairs or lower --data.val_size/--data.test_size"
        )
    val, test, train = rest[:n_val], rest[n_val : n_val + n_test], rest[n_val + n_test :]
    return head + train, val, test
