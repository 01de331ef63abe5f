"""Caption metrics in pure Python: BLEU-1..4 and CIDEr-D, as the COCO caption toolkit computes them.

Which implementation: both follow ``pycocoevalcap`` (github.com/tylin/coco-caption), the numbers
every captioning paper reports, not sacrebleu:

* **BLEU** (``bleu/bleu_scorer.py``): *corpus-level* BLEU over all images, multiple references
  per image, n-gram counts clipped by the maximum count in any single reference, brevity
  penalty from the **closest** reference length (ties go to the shorter one), no smoothing
  beyond the toolkit's tiny epsilons. BLEU-n is the geometric mean of the 1..n-gram precisions
  times the brevity penalty. Returned on a 0-100 scale (the toolkit prints 0-1).
* **CIDEr-D** (``pyciderevalcap/ciderD``): TF-IDF weighted n-gram (n = 1..4) cosine
  similarity with clipping of the hypothesis weights by the reference weights and a Gaussian
  length penalty (sigma = 6). Document frequencies are taken from the references of the
  evaluated set itself (``df="corpus"`` mode of the toolkit); the result is averaged over
  references and images and multiplied by 10, so it is on the toolkit's scale (papers often
  print it x100). Quirk kept for comparability: the toolkit measures "length" as the number
  of bigrams of a sentence.

Inputs are whitespace-tokenised strings; pass them through `tasks.captioning.text.normalize_caption`
first (the pipeline does) so tokenisation matches the toolkit's PTB tokeniser.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

_TINY = 1e-15  # the toolkit's guards against log(0) / division by zero
_SMALL = 1e-9


def _ngrams(words: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    """All k-grams, k = 1..n, with their counts."""
    counts: Counter[tuple[str, ...]] = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> list[float]:
    """Corpus BLEU-1..max_n, COCO toolkit style.

    Args:
        hypotheses: one whitespace-tokenised caption per image.
        references: for each image, one or more whitespace-tokenised reference captions.
        max_n: highest n-gram order.

    Returns:
        ``[BLEU-1, ..., BLEU-max_n]`` on a 0-100 scale.

    Raises:
        ValueError: when the two lists differ in length or an image has no reference.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    matches = [0] * max_n
    totals = [0] * max_n
    hyp_len = 0
    ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        if not refs:
            raise ValueError("every image needs at least one reference caption")
        h = hyp.split()
        ref_words = [r.split() for r in refs]
        # Clip each n-gram by its largest count in any single reference.
        max_ref: Counter[tuple[str, ...]] = Counter()
        for rw in ref_words:
            for gram, c in _ngrams(rw, max_n).items():
                max_ref[gram] = max(max_ref[gram], c)
        for gram, c in _ngrams(h, max_n).items():
            matches[len(gram) - 1] += min(c, max_ref.get(gram, 0))
        for k in range(max_n):
            totals[k] += max(len(h) - k, 0)
        hyp_len += len(h)
        # "closest" reference length; on a tie the shorter one (toolkit: min over (|diff|, len)).
        ref_len += min((abs(len(rw) - len(h)), len(rw)) for rw in ref_words)[1]
    ratio = (hyp_len + _TINY) / (ref_len + _SMALL)
    brevity = 1.0 if ratio >= 1.0 else math.exp(1.0 - 1.0 / ratio)
    scores = []
    log_sum = 0.0
    for k in range(max_n):
        precision = (matches[k] + _TINY) / (totals[k] + _SMALL)
        log_sum += math.log(precision)
        scores.append(100.0 * brevity * math.exp(log_sum / (k + 1)))
    return scores


def _cider_vec(
    counts: Counter[tuple[str, ...]], doc_freq: Counter[tuple[str, ...]], log_num_docs: float, n: int
) -> tuple[list[dict[tuple[str, ...], float]], list[float], int]:
    """TF-IDF vectors per n-gram order, their norms, and the toolkit's "length" (bigram count)."""
    vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
    norm = [0.0] * n
    length = 0
    for gram, tf in counts.items():
        k = len(gram) - 1
        # n-grams absent from every reference get df = 1 (log 1 = 0), as in the toolkit.
        weight = float(tf) * (log_num_docs - math.log(max(1.0, float(doc_freq.get(gram, 0)))))
        vec[k][gram] = weight
        norm[k] += weight * weight
        if k == 1:  # sic: pyciderevalcap counts bigrams as the sentence length
            length += tf
    return vec, [math.sqrt(x) for x in norm], length


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D, COCO toolkit style (document frequencies from the evaluated references).

    Args:
        hypotheses: one whitespace-tokenised caption per image.
        references: for each image, one or more whitespace-tokenised reference captions.
        n: highest n-gram order.
        sigma: width of the Gaussian length penalty.

    Returns:
        Mean CIDEr-D over images, on the toolkit's scale (x10 included; 0 for an empty input).
        With a single image every IDF is log(1) - log(1) = 0, so the score is 0: CIDEr needs a corpus.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        return 0.0
    ref_counts = [[_ngrams(r.split(), n) for r in refs] for refs in references]
    doc_freq: Counter[tuple[str, ...]] = Counter()
    for counts in ref_counts:
        for gram in set().union(*[set(c) for c in counts]):
            doc_freq[gram] += 1
    log_num_docs = math.log(float(len(references)))
    total = 0.0
    for hyp, counts in zip(hypotheses, ref_counts):
        vec_h, norm_h, len_h = _cider_vec(_ngrams(hyp.split(), n), doc_freq, log_num_docs, n)
        score = [0.0] * n
        for rc in counts:
            vec_r, norm_r, len_r = _cider_vec(rc, doc_freq, log_num_docs, n)
            penalty = math.exp(-((len_h - len_r) ** 2) / (2 * sigma**2))
            for k in range(n):
                val = sum(min(w, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, w in vec_h[k].items())
                if norm_h[k] != 0 and norm_r[k] != 0:
                    val /= norm_h[k] * norm_r[k]
                score[k] += val * penalty
        total += 10.0 * (sum(score) / n) / len(counts)
    return total / len(hypotheses)


def caption_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4 (0-100) and CIDEr-D (toolkit scale) in one dict.

    Args:
        hypotheses: normalised hypothesis captions.
        references: normalised reference captions per image.

    Returns:
        ``{"bleu1": ..., "bleu2": ..., "bleu3": ..., "bleu4": ..., "cider": ...}``.
    """
    bleu = corpus_bleu(hypotheses, references)
    out = {f"bleu{i + 1}": b for i, b in enumerate(bleu)}
    out["cider"] = cider_d(hypotheses, references)
    return out
