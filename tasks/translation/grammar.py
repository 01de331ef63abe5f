"""Embedded English→Spanish corpus generated from a small grammar of real Spanish.

The grammar covers what makes Spanish different from English at the level a first attention model can
learn in minutes on a CPU:

* gender/number agreement of articles, determiners and adjectives ("las casas rojas");
* adjectives after the noun ("the red car" → "el coche rojo");
* object clitics before the verb ("I love you" → "te quiero", "she sees them" → "ella los ve");
* pro-drop for "I"/"you"/"we" (the verb ending carries the person), kept subject pronouns otherwise;
* present and preterite for every person, copula *ser* (present/imperfect), *estar* in "where" questions;
* personal "a" before animate objects ("I see the boy" → "veo al niño");
* negation ("no te quiero"), yes/no questions ("¿me quieres?") and wh-questions ("¿qué compró ella?").

Sentences are lower case (except "I") without a final period so the corpus stays short and regular; the
mapping English→Spanish is a function (see :mod:`tasks.translation.lexicon` for the choices) and each
Spanish sentence is produced by only one English sentence, so the reverse direction is a function too.

Example:
    >>> pairs = generate_corpus(n_pairs=1000, seed=0)
    >>> ("I love you", "te quiero") in pairs
    True
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from core.errors import ConfigError
from tasks.translation.words import (
    ADJ_LIST,
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
    Verb,
    adjective_by_en,
    lexicon_size,
    noun_by_en,
    verb_by_en,
)

__all__ = [
    "Pair",
    "adjective_by_en",
    "anchor_pairs",
    "clause",
    "copula",
    "generate_corpus",
    "lexicon_size",
    "noun_by_en",
    "noun_phrase",
    "split_corpus",
    "subject_pronoun",
    "verb_by_en",
    "what_question",
    "where_question",
    "who_question",
]

Pair = tuple[str, str]


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
        A third-person :class:`Phrase`.
    """
    en_det_sg, en_det_pl, es_dets = DETERMINERS[det]
    en_noun = noun.en_pl if plural else noun.en_sg
    en_words = ([adj.en] if adj else []) + [en_noun]
    en_det = en_det_pl if plural else en_det_sg
    if en_det == "a":
        en_det = _article_an(en_words[0])
    es_det = es_dets[(2 if plural else 0) + (1 if noun.gender == "f" else 0)]
    es_words = [es_det, noun.es_pl if plural else noun.es_sg]
    if adj:
        es_words.append(adj.es[(noun.gender, plural)])
    animate = bool(noun.tags & {"person", "animal"})
    return Phrase(
        " ".join([en_det] + en_words), " ".join(es_words), P3P if plural else P3S, noun.gender, plural, animate
    )


def subject_pronoun(index: int) -> Phrase:
    """Subject pronoun ``SUBJECT_PRONOUNS[index]`` as a :class:`Phrase`."""
    en, es, person, gender, plural = SUBJECT_PRONOUNS[index]
    return Phrase(en, es, person, gender, plural, animate=True, pronoun=True)


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


def _es_object(verb: Verb, obj: Phrase) -> str:
    if verb.personal_a and obj.animate:
        # Personal "a" before animate direct objects; "a el" contracts to "al".
        return "al " + obj.es[3:] if obj.es.startswith("el ") else "a " + obj.es
    return obj.es


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
    aux, main = _en_verb(verb, subject.person, tense, negative, question)
    en_obj = ""
    es_pre, es_post = "", ""
    if clitic is not None:
        en_obj, es_pre, _ = OBJECT_PRONOUNS[clitic]
    elif obj is not None:
        en_obj, es_post = obj.en, _es_object(verb, obj)
    tail = [w for w in (verb.particle, en_obj) if w]
    if question:
        en = [aux, subject.en, main] + tail
    else:
        en = [subject.en] + ([aux] if aux else []) + [main] + tail
    table = verb.preterite if tense == "past" else verb.present
    es = [w for w in (subject.es, "no" if negative else "", es_pre, table[subject.person], es_post) if w]
    if adverb is not None:
        en_adv, es_adv = ADVERBS[tense][adverb]
        en.append(en_adv)
        es.append(es_adv)
    return _finish(en, es, question)


def copula(
    subject: Phrase, adj: Adjective, tense: str = "present", negative: bool = False, question: bool = False
) -> Pair:
    """Render "X is ADJ" with *ser* (present) or its imperfect (past), adjective agreeing with X."""
    be = (EN_BE_PAST if tense == "past" else EN_BE_PRESENT)[subject.person]
    if subject.en == "I" and tense == "past":
        be = "was"
    if negative:
        # "aren't I" is the idiomatic negative question; "am not" in statements.
        be = ("aren't" if question else "am not") if be == "am" else be + "n't"
    en = [be, subject.en, adj.en] if question else [subject.en, be, adj.en]
    ser = (SER_IMPERFECT if tense == "past" else SER_PRESENT)[subject.person]
    es = [w for w in (subject.es, "no" if negative else "", ser, adj.es[(subject.gender, subject.plural)]) if w]
    return _finish(en, es, question)


def where_question(subject: Phrase, tense: str = "present") -> Pair:
    """ "where is the cat?" → "¿dónde está el gato?" (subject pronoun after the verb)."""
    be = (EN_BE_PAST if tense == "past" else EN_BE_PRESENT)[subject.person]
    if subject.en == "I" and tense == "past":
        be = "was"
    estar = (ESTAR_IMPERFECT if tense == "past" else ESTAR_PRESENT)[subject.person]
    return _finish(["where", be, subject.en], [w for w in ("dónde", estar, subject.es) if w], True)


def who_question(verb: Verb, obj: Phrase | None = None, clitic: int | None = None, tense: str = "present") -> Pair:
    """ "who loves you?" → "¿quién te quiere?" (third person singular)."""
    who = Phrase("who", "quién", P3S, "m", False, animate=True, pronoun=True)
    en, es = clause(who, verb, obj=obj, clitic=clitic, tense=tense)
    return en + "?", "¿" + es + "?"


def what_question(subject: Phrase, verb: Verb, tense: str = "present") -> Pair:
    """ "what did she buy?" → "¿qué compró ella?" (subject after the verb in Spanish)."""
    aux = "did" if tense == "past" else ("does" if subject.person == P3S else "do")
    en = ["what", aux, subject.en, verb.en_base] + ([verb.particle] if verb.particle else [])
    table = verb.preterite if tense == "past" else verb.present
    es = [w for w in ("qué", table[subject.person], subject.es) if w]
    return _finish(en, es, True)


def _finish(en: list[str], es: list[str], question: bool) -> Pair:
    en_s, es_s = " ".join(en), " ".join(es)
    if question:
        return en_s + "?", "¿" + es_s + "?"
    return en_s, es_s


def anchor_pairs() -> list[Pair]:
    """Pairs always present in the training split (the examples the docs and the CLI show)."""
    return [
        clause(subject_pronoun(0), verb_by_en("love"), clitic=1),  # I love you → te quiero
        _pair(noun_phrase(noun_by_en("car"), adj=adjective_by_en("red"))),  # the red car → el coche rojo
        clause(subject_pronoun(3), verb_by_en("see"), clitic=5),  # she sees them → ella los ve
        clause(subject_pronoun(1), verb_by_en("love"), clitic=0, question=True),  # do you love me?
        clause(subject_pronoun(0), verb_by_en("love"), clitic=1, negative=True),  # I don't love you
    ]


def _pair(p: Phrase) -> Pair:
    return p.en, p.es


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

    def sentence(self) -> Pair:
        r = self.rng
        kind = r.choices(
            ["np", "svo", "clitic", "intr", "cop", "where", "who", "what"],
            weights=[8, 34, 16, 10, 14, 5, 7, 6],
        )[0]
        if kind == "np":
            p = self.np(THING_TAGS | {"person", "animal"}, adj_p=0.7)
            return p.en, p.es
        if kind == "svo":
            verb = r.choice(self.transitive)
            subj = self.subject(verb)
            obj = self.np(verb.obj_tags, adj_p=0.35)
            return clause(subj, verb, obj=obj, **self.modifiers())
        if kind == "clitic":
            verb = r.choice(self.clitic_verbs)
            subj = self.subject(verb)
            # Exclude reflexive-looking combinations ("I see me", "we help us").
            choices = [
                i
                for i, (_, _, p) in enumerate(OBJECT_PRONOUNS)
                if not (p == subj.person and p in (P1S, P2S, P1P)) and not ({p, subj.person} <= {P1S, P1P})
            ]
            return clause(subj, verb, clitic=r.choice(choices), **self.modifiers())
        if kind == "intr":
            verb = r.choice(self.intransitive)
            return clause(self.subject(verb), verb, **self.modifiers())
        if kind == "cop":
            m = self.modifiers()
            if r.random() < 0.35:
                subj = subject_pronoun(r.randrange(len(SUBJECT_PRONOUNS)))
                adj = r.choice([a for a in ADJ_LIST if "person" in a.tags])
            else:
                adj = r.choice(ADJ_LIST)
                subj = self.np(adj.tags, adj_p=0.25)
            return copula(subj, adj, tense=m["tense"], negative=m["negative"], question=m["question"])
        if kind == "where":
            subj = (
                subject_pronoun(r.randrange(len(SUBJECT_PRONOUNS)))
                if r.random() < 0.3
                else self.np(THING_TAGS | {"person", "animal"}, adj_p=0.3)
            )
            return where_question(subj, tense=r.choice(["present", "past"]))
        if kind == "who":
            verb = r.choice(self.transitive)
            tense = r.choice(["present", "past"])
            if verb in self.clitic_verbs and r.random() < 0.4:
                return who_question(verb, clitic=r.randrange(len(OBJECT_PRONOUNS)), tense=tense)
            return who_question(verb, obj=self.np(verb.obj_tags, adj_p=0.3), tense=tense)
        # "what" questions only for verbs that take things.
        verb = r.choice(self.thing_verbs)
        return what_question(self.subject(verb), verb, tense=r.choice(["present", "past"]))


def generate_corpus(n_pairs: int = 30_000, seed: int = 0) -> list[Pair]:
    """Generate ``n_pairs`` distinct (english, spanish) pairs, deterministically for ``seed``.

    Both sides are unique across the corpus (a Spanish sentence reachable from two English sentences,
    e.g. "we walk"/"we walked" → "caminamos", is kept only for the first), so splits made from it share
    no sentence in either language. :func:`anchor_pairs` come first.

    Args:
        n_pairs: number of pairs (≥ len(anchor_pairs())).
        seed: RNG seed; the same seed gives the same list on every platform.

    Returns:
        List of ``(english, spanish)`` pairs.
    """
    rng = random.Random(seed)
    sampler = _Sampler(rng)
    pairs: list[Pair] = []
    seen_en: set[str] = set()
    seen_es: set[str] = set()

    def add(p: Pair) -> None:
        if p[0] not in seen_en and p[1] not in seen_es:
            seen_en.add(p[0])
            seen_es.add(p[1])
            pairs.append(p)

    for p in anchor_pairs():
        add(p)
    attempts = 0
    # The sentence space is far larger than any sensible n_pairs; the cap only guards against a
    # lexicon edit that makes it small.
    while len(pairs) < n_pairs and attempts < 50 * n_pairs:
        add(sampler.sentence())
        attempts += 1
    if len(pairs) < n_pairs:
        raise ConfigError(
            f"--data.n_pairs={n_pairs} is more than the embedded grammar produces: it gave only "
            f"{len(pairs)} distinct pairs; lower --data.n_pairs"
        )
    return pairs


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
