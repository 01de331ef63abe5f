"""Corpus-level text metrics via sacrebleu (detokenized, cased input; sacrebleu tokenizes itself)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["char_error_rate", "corpus_bleu", "corpus_chrf", "word_error_rate"]


def _check(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"got {len(hyps)} hypotheses but {len(refs)} references")


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], tokenize: str = "13a") -> float:
    """Corpus BLEU (0-100) of detokenized hypotheses against one reference each.

    Args:
        hyps: N detokenized hypothesis strings.
        refs: N reference strings.
        tokenize: sacrebleu tokenizer (``"13a"`` default; ``"zh"`` / ``"char"`` for CJK).
    """
    import sacrebleu

    _check(hyps, refs)
    if not hyps:
        return 0.0
    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)], tokenize=tokenize).score)


def corpus_chrf(hyps: Sequence[str], refs: Sequence[str], word_order: int = 0) -> float:
    """Corpus chrF (0-100; ``word_order=2`` gives chrF++)."""
    import sacrebleu

    _check(hyps, refs)
    if not hyps:
        return 0.0
    return float(sacrebleu.corpus_chrf(list(hyps), [list(refs)], word_order=word_order).score)


def _edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def word_error_rate(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus WER: total word edits / total reference words (whitespace split)."""
    _check(hyps, refs)
    errors = sum(_edit_distance(h.split(), r.split()) for h, r in zip(hyps, refs))
    return errors / max(1, sum(len(r.split()) for r in refs))


def char_error_rate(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus CER: total character edits / total reference characters."""
    _check(hyps, refs)
    errors = sum(_edit_distance(list(h), list(r)) for h, r in zip(hyps, refs))
    return errors / max(1, sum(len(r) for r in refs))
