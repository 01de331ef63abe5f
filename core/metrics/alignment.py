"""Does the heatmap point at the right thing? Alignment scores of attention against gold alignments.

Three scores, one per kind of gold the tasks' data can provide:

* :func:`aer`: alignment error rate (Och & Ney 2003) of word links against gold *sure* and *possible*
  links, ``1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|)`` (0 is perfect; Luong et al. 2015 report 0.34-0.39 for
  their attention on real data, the Berkeley aligner 0.32). The links of an attention matrix are its argmax
  source word per target word (:func:`argmax_links`), after subwords are merged into words
  (:func:`merge_subwords`).
* :func:`pointing_accuracy`: the share of words whose attention peak lies inside the region of the object
  they name (captioning: cells of an image grid).
* :func:`span_accuracy`: the share of output symbols whose attention peak lies inside their gold span
  (speech: the encoder frames of the word a character belongs to).

All take plain Python data or CPU tensors, and count over a corpus (sums of counts, not a mean of
per-sentence rates), as AER is defined.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "AlignmentCounts",
    "aer",
    "argmax_links",
    "merge_subwords",
    "peak_in_region",
    "pointing_accuracy",
    "span_accuracy",
    "word_index_of_tokens",
]

Link = tuple[int, int]  # (source word, target word)


@dataclass
class AlignmentCounts:
    """Corpus counts of :func:`aer`: ``|A|``, ``|S|``, ``|A ∩ S|`` and ``|A ∩ P|`` summed over sentences."""

    predicted: int = 0
    sure: int = 0
    hit_sure: int = 0
    hit_possible: int = 0

    def add(self, predicted: Iterable[Link], sure: Iterable[Link], possible: Iterable[Link] = ()) -> None:
        """Count one sentence (``possible`` is completed with ``sure``: S ⊆ P by definition)."""
        a, s = set(predicted), set(sure)
        p = set(possible) | s
        self.predicted += len(a)
        self.sure += len(s)
        self.hit_sure += len(a & s)
        self.hit_possible += len(a & p)

    @property
    def aer(self) -> float:
        """``1 - (|A∩S| + |A∩P|) / (|A| + |S|)``; NaN when there is nothing to score."""
        total = self.predicted + self.sure
        return float("nan") if total == 0 else 1.0 - (self.hit_sure + self.hit_possible) / total


def aer(
    predicted: Sequence[Iterable[Link]],
    sure: Sequence[Iterable[Link]],
    possible: Sequence[Iterable[Link]] | None = None,
) -> float:
    """Corpus alignment error rate of ``predicted`` links against gold ``sure`` (and ``possible``) links.

    Args:
        predicted: per sentence, the predicted ``(source word, target word)`` links.
        sure: per sentence, the gold sure links.
        possible: per sentence, the gold possible links (default: the sure ones only).

    Returns:
        AER in [0, 1]; 0 when the predicted links are exactly the sure links.
    """
    if len(predicted) != len(sure) or (possible is not None and len(possible) != len(sure)):
        raise ValueError(f"aer: {len(predicted)} predicted, {len(sure)} sure link sets: one per sentence each")
    counts = AlignmentCounts()
    for i, (a, s) in enumerate(zip(predicted, sure)):
        counts.add(a, s, possible[i] if possible is not None else ())
    return counts.aer


def word_index_of_tokens(tokens: Sequence[str], marker: str = "▁") -> list[int]:
    """The whitespace word each subword token belongs to: a token starting with ``marker`` (SentencePiece /
    Metaspace ``▁``) starts a new word, the first token always does, and every other token continues the
    word before it (so "¿qué" is one word, as ``text.split()`` has it)."""
    out: list[int] = []
    word = -1
    for i, tok in enumerate(tokens):
        if i == 0 or tok.startswith(marker):
            word += 1
        out.append(word)
    return out


def merge_subwords(weights: Tensor, src_words: Sequence[int], tgt_words: Sequence[int]) -> Tensor:
    """Attention between words from attention between subword tokens.

    A source word receives the sum of its tokens' weights (the mass the decoder put on it); a target word's
    row is the mean of its tokens' rows (each token's row sums to one, so the word's row does too).

    Args:
        weights: ``(T, S)`` attention of target tokens over source tokens.
        src_words: word index of each of the S source tokens (:func:`word_index_of_tokens`).
        tgt_words: word index of each of the T target tokens.

    Returns:
        ``(T_words, S_words)`` float tensor.
    """
    t, s = weights.shape
    if len(src_words) != s or len(tgt_words) != t:
        raise ValueError(f"merge_subwords: weights {tuple(weights.shape)} but {len(tgt_words)}x{len(src_words)} words")
    w = weights.float()
    n_src, n_tgt = max(src_words, default=-1) + 1, max(tgt_words, default=-1) + 1
    src_map = torch.zeros(s, n_src)  # (S, S_words) one-hot
    src_map[torch.arange(s), torch.as_tensor(list(src_words))] = 1.0
    tgt_map = torch.zeros(n_tgt, t)  # (T_words, T) rows average their tokens
    tgt_map[torch.as_tensor(list(tgt_words)), torch.arange(t)] = 1.0
    tgt_map = tgt_map / tgt_map.sum(1, keepdim=True).clamp_min(1.0)
    return tgt_map @ w @ src_map  # (T_words, T) @ (T, S) @ (S, S_words) -> (T_words, S_words)


def argmax_links(word_weights: Tensor) -> set[Link]:
    """``(source word, target word)`` links: each target word to the source word it attends to most."""
    if word_weights.numel() == 0:
        return set()
    best = word_weights.argmax(dim=-1).tolist()  # (T_words,)
    return {(int(src), tgt) for tgt, src in enumerate(best)}


def peak_in_region(weights: Tensor, region: Iterable[int]) -> bool:
    """Whether the largest weight of a flat ``weights`` vector lies at one of the ``region`` positions."""
    return int(weights.reshape(-1).argmax()) in set(region)


def pointing_accuracy(maps: Sequence[Tensor], regions: Sequence[Iterable[int]]) -> float:
    """Share of attention maps whose peak lies in its gold region (e.g. the cells of the named object).

    Args:
        maps: one attention map per scored word (any shape; flattened row-major, as the regions index it).
        regions: per map, the flat positions of the object the word names.

    Returns:
        The share in [0, 1], NaN when there is nothing to score.
    """
    if len(maps) != len(regions):
        raise ValueError(f"pointing_accuracy: {len(maps)} maps but {len(regions)} regions")
    if not maps:
        return float("nan")
    return sum(peak_in_region(m, r) for m, r in zip(maps, regions)) / len(maps)


def span_accuracy(rows: Tensor, spans: Sequence[tuple[int, int]]) -> float:
    """Share of attention rows whose peak lies inside their gold span ``[start, end)`` (source positions).

    Args:
        rows: ``(T, S)`` attention of T output symbols over S source positions.
        spans: per row, the half-open span of source positions it should look at; a row whose span is
            empty (``start >= end``) is not scored.

    Returns:
        The share in [0, 1] over scored rows, NaN when none is scored.
    """
    if rows.shape[0] != len(spans):
        raise ValueError(f"span_accuracy: {rows.shape[0]} rows but {len(spans)} spans")
    peaks = rows.argmax(dim=-1).tolist() if rows.numel() else []
    scored = [(p, a, b) for p, (a, b) in zip(peaks, spans) if a < b]
    if not scored:
        return float("nan")
    return sum(a <= p < b for p, a, b in scored) / len(scored)
