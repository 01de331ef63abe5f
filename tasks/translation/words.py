"""The words of the embedded English→Spanish grammar (:mod:`tasks.translation.grammar`): nouns, adjectives
and verbs with their inflections, read from :mod:`tasks.translation.lexicon`, plus the closed classes
(determiners, pronouns, copulas, adverbs)."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.translation.lexicon import ADJECTIVES, NOUNS, VERBS

# Person slots used for Spanish conjugation tables: 1sg, 2sg, 3sg, 1pl, 3pl ("you" is always tú).
P1S, P2S, P3S, P1P, P3P = range(5)


@dataclass(frozen=True)
class Noun:
    """A countable noun with both languages' singular/plural forms and selectional tags."""

    en_sg: str
    en_pl: str
    es_sg: str
    es_pl: str
    gender: str  # "m" or "f"
    tags: frozenset[str]


@dataclass(frozen=True)
class Adjective:
    """An adjective; Spanish forms indexed by (gender, plural)."""

    en: str
    es: dict[tuple[str, bool], str]
    tags: frozenset[str]


@dataclass(frozen=True)
class Verb:
    """A verb with English forms and Spanish present/preterite tables (5 persons each)."""

    en_base: str
    en_3sg: str
    en_past: str
    particle: str  # English preposition after the verb ("look for", "wait for"), "" if none
    es_inf: str
    present: tuple[str, ...]
    preterite: tuple[str, ...]
    obj_tags: frozenset[str]  # empty = intransitive only
    personal_a: bool  # animate objects take "a" (false for tener/querer "want")
    intransitive: bool


# A gold word link inside a phrase or sentence: (English word, Spanish word, sure?), indices over ``split()``.
PhraseLink = tuple[int, int, bool]


@dataclass(frozen=True)
class Phrase:
    """A rendered phrase with the agreement features a clause needs, and its gold word links.

    ``links`` index the words of ``en.split()`` and ``es.split()`` (see :mod:`tasks.translation.grammar` for
    what is linked and how surely).
    """

    en: str
    es: str
    person: int
    gender: str
    plural: bool
    animate: bool = False
    pronoun: bool = False
    links: tuple[PhraseLink, ...] = ()


# ---------------------------------------------------------------------------------------------------
# Morphology helpers
# ---------------------------------------------------------------------------------------------------

_ACCENT_STRIP = str.maketrans("áéíóú", "aeiou")


def _es_plural(word: str) -> str:
    """Regular Spanish noun plural (irregular ones are spelled out in the lexicon)."""
    if word[-1] in "aeiouáéó":
        return word + "s"
    if word.endswith("z"):
        return word[:-1] + "ces"
    if len(word) > 2 and word[-2] in "áéíóú" and word[-1] in "ns":
        # "limón" → "limones": the stress moves off the written accent.
        return word[:-2] + word[-2].translate(_ACCENT_STRIP) + word[-1] + "es"
    return word + "es"


def _en_plural(word: str) -> str:
    """Regular English plural."""
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _regular_present(inf: str) -> tuple[str, ...]:
    stem, cls = inf[:-2], inf[-2:]
    endings = {
        "ar": ("o", "as", "a", "amos", "an"),
        "er": ("o", "es", "e", "emos", "en"),
        "ir": ("o", "es", "e", "imos", "en"),
    }[cls]
    return tuple(stem + e for e in endings)


def _regular_preterite(inf: str) -> tuple[str, ...]:
    stem, cls = inf[:-2], inf[-2:]
    if cls == "ar":
        first = stem + "é"
        # Orthographic changes keep the consonant sound before "é": busqué, llegué, abracé.
        if stem.endswith("c"):
            first = stem[:-1] + "qué"
        elif stem.endswith("g"):
            first = stem + "ué"
        elif stem.endswith("z"):
            first = stem[:-1] + "cé"
        return (first, stem + "aste", stem + "ó", stem + "amos", stem + "aron")
    return (stem + "í", stem + "iste", stem + "ió", stem + "imos", stem + "ieron")


def _fields(block: str) -> list[list[str]]:
    return [line.split("|") for line in block.strip().splitlines() if line.strip()]


def _load_nouns() -> list[Noun]:
    out = []
    for en_sg, en_pl, es_sg, gender, es_pl, tags in _fields(NOUNS):
        out.append(
            Noun(
                en_sg, en_pl or _en_plural(en_sg), es_sg, es_pl or _es_plural(es_sg), gender, frozenset(tags.split(","))
            )
        )
    return out


def _load_adjectives() -> list[Adjective]:
    out = []
    for en, m_sg, f_sg, m_pl, f_pl, tags in _fields(ADJECTIVES):
        if m_sg.endswith("o"):
            regular = (m_sg, m_sg[:-1] + "a", m_sg + "s", m_sg[:-1] + "as")
        else:  # "grande", "verde": invariable in gender
            regular = (m_sg, m_sg, m_sg + "s", m_sg + "s")
        forms = (f_sg or regular[1], m_pl or regular[2], f_pl or regular[3])
        out.append(
            Adjective(
                en,
                {("m", False): m_sg, ("f", False): forms[0], ("m", True): forms[1], ("f", True): forms[2]},
                frozenset(tags.split(",")),
            )
        )
    return out


def _load_verbs() -> list[Verb]:
    out = []
    for base, s3, past, particle, inf, pres, pret, obj_tags, flags in _fields(VERBS):
        out.append(
            Verb(
                base,
                s3,
                past,
                particle,
                inf,
                tuple(pres.split()) if pres else _regular_present(inf),
                tuple(pret.split()) if pret else _regular_preterite(inf),
                frozenset(t for t in obj_tags.split(",") if t),
                "noa" not in flags,
                "intr" in flags or not obj_tags,
            )
        )
    return out


NOUN_LIST: list[Noun] = _load_nouns()
ADJ_LIST: list[Adjective] = _load_adjectives()
VERB_LIST: list[Verb] = _load_verbs()

# Determiners: english sg, english pl, spanish (m sg, f sg, m pl, f pl).
DETERMINERS: list[tuple[str, str, tuple[str, str, str, str]]] = [
    ("the", "the", ("el", "la", "los", "las")),
    ("a", "some", ("un", "una", "unos", "unas")),
    ("my", "my", ("mi", "mi", "mis", "mis")),
    ("your", "your", ("tu", "tu", "tus", "tus")),
    ("our", "our", ("nuestro", "nuestra", "nuestros", "nuestras")),
    ("this", "these", ("este", "esta", "estos", "estas")),
    ("that", "those", ("ese", "esa", "esos", "esas")),
]

# Subject pronouns: english, spanish ("" = dropped; the verb ending says who), person, gender, plural.
SUBJECT_PRONOUNS: list[tuple[str, str, int, str, bool]] = [
    ("I", "", P1S, "m", False),
    ("you", "", P2S, "m", False),
    ("he", "él", P3S, "m", False),
    ("she", "ella", P3S, "f", False),
    ("we", "", P1P, "m", True),
    ("they", "ellos", P3P, "m", True),
]
# Object pronouns → clitics placed before the conjugated verb.
OBJECT_PRONOUNS: list[tuple[str, str, int]] = [
    ("me", "me", P1S),
    ("you", "te", P2S),
    ("him", "lo", P3S),
    ("her", "la", P3S),
    ("us", "nos", P1P),
    ("them", "los", P3P),
]

SER_PRESENT = ("soy", "eres", "es", "somos", "son")
SER_IMPERFECT = ("era", "eras", "era", "éramos", "eran")
ESTAR_PRESENT = ("estoy", "estás", "está", "estamos", "están")
ESTAR_IMPERFECT = ("estaba", "estabas", "estaba", "estábamos", "estaban")
EN_BE_PRESENT = ("am", "are", "is", "are", "are")
EN_BE_PAST = ("was", "were", "was", "were", "were")

# Time adverbs appended to clauses: (english, spanish) per tense.
ADVERBS = {
    "present": [("today", "hoy"), ("now", "ahora"), ("every day", "todos los días")],
    "past": [("yesterday", "ayer"), ("today", "hoy"), ("last night", "anoche")],
}
# Gold links of the adverbs of more than one word (a one-word adverb has the one sure link (0, 0)): "every"
# and "day" each translate one word of "todos los días", and the article belongs to both; "anoche" means
# "last" and "night" at once.
ADVERB_LINKS: dict[str, tuple[PhraseLink, ...]] = {
    "every day": ((0, 0, True), (1, 2, True), (0, 1, False), (1, 1, False)),
    "last night": ((0, 0, True), (1, 0, True)),
}

# Verbs an animal may be the subject of ("the dog sees the cat", "the horses ran").
ANIMAL_SUBJECT_VERBS = frozenset(
    {"see", "hear", "follow", "find", "eat", "run", "walk", "sleep", "swim", "jump", "come", "love"}
)
THING_TAGS = frozenset({"object", "food", "vehicle", "place", "text", "open", "fragile", "clean"})


def lexicon_size() -> int:
    """Number of distinct lexical items (nouns, adjectives, verbs, pronouns, determiners, adverbs)."""
    adverbs = {en for v in ADVERBS.values() for en, _ in v}
    return (
        len(NOUN_LIST)
        + len(ADJ_LIST)
        + len({v.en_base for v in VERB_LIST})
        + len(SUBJECT_PRONOUNS)
        + len(OBJECT_PRONOUNS)
        + len(DETERMINERS)
        + len(adverbs)
    )


def verb_by_en(base: str) -> Verb:
    """Look a verb up by its English base form ("love"); first match."""
    for v in VERB_LIST:
        if v.en_base == base:
            return v
    raise KeyError(base)


def noun_by_en(word: str) -> Noun:
    """Look a noun up by its English singular."""
    for n in NOUN_LIST:
        if n.en_sg == word:
            return n
    raise KeyError(word)


def adjective_by_en(word: str) -> Adjective:
    """Look an adjective up by its English form."""
    for a in ADJ_LIST:
        if a.en == word:
            return a
    raise KeyError(word)
