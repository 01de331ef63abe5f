"""core.metrics.alignment on hand-made cases: a perfect alignment, a shifted one, attention on the wrong object."""

from __future__ import annotations

import math

import pytest
import torch

from core.metrics.alignment import (
    AlignmentCounts,
    aer,
    argmax_links,
    merge_subwords,
    pointing_accuracy,
    span_accuracy,
    word_index_of_tokens,
)


def test_aer_perfect_shifted_and_possible_links() -> None:
    gold = [{(0, 0), (1, 1), (2, 2), (3, 3)}]
    assert aer([{(0, 0), (1, 1), (2, 2), (3, 3)}], gold) == 0.0
    # every link shifted by one source word: nothing matches
    assert aer([{(1, 0), (2, 1), (3, 2), (0, 3)}], gold) == 1.0
    # half right: 1 - (2 + 2) / (4 + 4)
    assert aer([{(0, 0), (1, 1), (3, 2), (2, 3)}], gold) == pytest.approx(0.5)
    # a link that is only possible counts for |A ∩ P| but not |A ∩ S|: 1 - (3 + 4) / (4 + 4)
    assert aer([{(0, 0), (1, 1), (2, 2), (2, 3)}], gold, [{(2, 3)}]) == pytest.approx(1 - 7 / 8)
    counts = AlignmentCounts()
    assert math.isnan(counts.aer)
    counts.add({(0, 0)}, {(0, 0)})
    counts.add({(1, 0)}, {(0, 0)})  # corpus counts, not a mean of per-sentence rates
    assert counts.aer == pytest.approx(1 - 2 / 4)
    with pytest.raises(ValueError, match="one per sentence"):
        aer([set()], [])


def test_subwords_merge_into_words_then_argmax() -> None:
    src = ["▁the", "▁re", "d", "▁car"]  # words: the, red, car
    tgt = ["▁el", "▁co", "che", "▁rojo"]  # words: el, coche, rojo
    assert word_index_of_tokens(src) == [0, 1, 1, 2]
    assert word_index_of_tokens(["▁hola", "▁¿", "qué", "?"]) == [0, 1, 1, 1]  # "hola ¿qué?": two words
    w = torch.tensor(
        [
            [0.9, 0.05, 0.0, 0.05],  # el -> the
            [0.0, 0.1, 0.1, 0.8],  # co -> car
            [0.1, 0.0, 0.1, 0.8],  # che -> car
            [0.0, 0.5, 0.4, 0.1],  # rojo -> red (its two subwords together)
        ]
    )
    words = merge_subwords(w, word_index_of_tokens(src), word_index_of_tokens(tgt))
    assert words.shape == (3, 3)
    torch.testing.assert_close(words.sum(-1), torch.ones(3))
    assert argmax_links(words) == {(0, 0), (2, 1), (1, 2)}
    assert aer([argmax_links(words)], [{(0, 0), (2, 1), (1, 2)}]) == 0.0


def test_pointing_and_span_accuracy() -> None:
    grid = torch.zeros(3, 3)
    grid[0, 2] = 1.0  # the peak is in the top-right cell (flat index 2)
    assert pointing_accuracy([grid], [{2, 5}]) == 1.0
    assert pointing_accuracy([grid], [{6, 7}]) == 0.0  # attention on the wrong object scores 0
    assert math.isnan(pointing_accuracy([], []))
    rows = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.0, 0.1, 0.2, 0.7], [0.25, 0.25, 0.25, 0.25]])
    assert span_accuracy(rows, [(0, 2), (2, 4), (3, 3)]) == 1.0  # the empty span is not scored
    assert span_accuracy(rows, [(1, 2), (2, 4), (0, 0)]) == 0.5
