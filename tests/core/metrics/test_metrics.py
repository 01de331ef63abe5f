"""Tests for core.metrics.text (sacrebleu glue, WER/CER)."""

from __future__ import annotations

import pytest

from core.metrics.text import char_error_rate, corpus_bleu, corpus_chrf, word_error_rate


def test_metrics() -> None:
    hyps = ["¿Dónde está el niño?", "The cat sat on the mat."]
    assert corpus_bleu(hyps, hyps) == pytest.approx(100.0)
    assert corpus_chrf(hyps, hyps) == pytest.approx(100.0)
    assert corpus_bleu(["dónde"], ["Dónde"]) < 100.0  # cased
    assert 0.0 < corpus_chrf(["the cat"], ["the hat"]) < 100.0
    assert word_error_rate(["a b c"], ["a x c"]) == pytest.approx(1 / 3)
    assert char_error_rate(["abc"], ["abd"]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        corpus_bleu(["a"], [])
