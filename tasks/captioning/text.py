"""Caption text normalisation, close to the COCO caption toolkit's PTB tokenisation.

The COCO caption evaluation toolkit (``pycocoevalcap``) runs the Stanford PTBTokenizer (Java)
and then drops punctuation tokens. We cannot run Java, so `ptb_tokenize` re-implements the
parts that matter for captions in pure Python:

* lower-casing;
* splitting off punctuation and brackets as separate tokens, then dropping the toolkit's
  punctuation list (``'' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ;``);
* PTB contraction splits (``don't`` -> ``do n't``, ``man's`` -> ``man 's``, ``we're`` ->
  ``we 're``), which the toolkit keeps as tokens.

The same function normalises captions for training (so the vocabulary sees exactly the tokens
the metrics score) and for evaluation.
"""

from __future__ import annotations

import re

# Punctuation tokens removed by pycocoevalcap/tokenizer/ptbtokenizer.py after tokenisation.
_PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
    # PTB turns these into -LRB-/-RRB-/-LCB-/-RCB- and ``/'' first, which the toolkit then drops.
    + ["(", ")", "[", "]", "{", "}", '"']
)

# PTB contractions: split these suffixes off the word they end ("n't" keeps its n).
_CONTRACTION = re.compile(r"(?i)^(.+?)(n't|'s|'re|'ve|'m|'ll|'d)$")
# Anything that is not a letter, digit, apostrophe, or an intra-word hyphen/dot is a separator
# token; PTB keeps "e.g." and "x-ray" together, and so do we.
_TOKEN = re.compile(r"[a-z0-9]+(?:[-.'][a-z0-9]+)*'?|'[a-z]+|[^\sa-z0-9]")


def ptb_tokenize(text: str) -> list[str]:
    """Tokenise one caption the way the COCO toolkit scores it.

    Args:
        text: raw caption, any case, any punctuation.

    Returns:
        Lower-case tokens with punctuation removed and contractions split
        (``"A man's dog, running."`` -> ``["a", "man", "'s", "dog", "running"]``).
    """
    tokens: list[str] = []
    for raw in _TOKEN.findall(text.lower()):
        if raw in _PUNCTUATIONS or not raw.strip():
            continue
        # A trailing dot after a word is sentence punctuation, not part of the word
        # (PTB splits "dog." but keeps "e.g."): only keep dots that are inside the word.
        raw = raw.rstrip(".")
        match = _CONTRACTION.match(raw)
        if match and match.group(1) not in ("", "'"):
            parts = [match.group(1), match.group(2)]
        else:
            parts = [raw]
        for part in parts:
            part = part.strip("'") if part not in ("'s", "'re", "'ve", "'m", "'ll", "'d", "n't") else part
            if part and part not in _PUNCTUATIONS:
                tokens.append(part)
    return tokens


def normalize_caption(text: str) -> str:
    """Space-joined `ptb_tokenize` output: the canonical form used for training and scoring.

    Args:
        text: raw caption.

    Returns:
        Normalised caption (may be ``""`` when the caption held only punctuation/whitespace).
    """
    return " ".join(ptb_tokenize(text))
