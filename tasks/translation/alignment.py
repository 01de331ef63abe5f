"""Does the attention point at the word being translated? Alignment error rate of a translation model.

Luong et al. (2015, §5.4) score attention as a word aligner: the *reference* translation is teacher-forced
through the model, each target word is linked to the source word it attends to most, and the links are
compared with gold sure/possible links by the alignment error rate (AER, Och & Ney 2003; 0 is perfect).
:func:`alignment_scores` does that with :mod:`core.metrics.alignment` on the gold links of the embedded grammar
corpus (:mod:`tasks.translation.grammar`); the data module hands them out (``gold_alignments``), and validation
and test log the scores as ``val/aer`` and ``test/aer`` (:mod:`tasks.translation.evaluation`).

Tokens are merged into the *whitespace* words the gold links index (``text.split()``): subword tokens by their
Metaspace ``▁`` marker, word tokens by re-tokenising each whitespace word, characters by the spaces between
them (:func:`word_indices`). A target word's attention row is the mean of its tokens' rows, a source word
receives the sum of its tokens' columns (:func:`core.metrics.alignment.merge_subwords`).

Multi-head models (the Transformer, an RNN decoder with ``attention: multihead``) are scored on the mean of
the heads of their last decoder layer, which is what their heatmaps show; every head and every layer is also
scored alone, since single heads often align far better or worse than their mean.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

from core.metrics.alignment import AlignmentCounts, argmax_links, merge_subwords, word_index_of_tokens
from tasks.translation.heads import layer_head_attention_batch
from tasks.translation.inference import Translator

__all__ = ["GoldPair", "Link", "alignment_scores", "has_alignment", "word_indices"]

Link = tuple[int, int]  # (source word, target word)
# (source sentence, target sentence, sure links, possible links), links over the whitespace words
GoldPair = tuple[str, str, Sequence[Link], Sequence[Link]]

# Token kinds whose token strings start a word with the Metaspace marker (core.text.tokenizers.SubwordTokenizer, and
# the SentencePiece pieces of a pretrained Marian model).
_METASPACE_KINDS = ("subword", "marian")


def has_alignment(translator: Translator) -> bool:
    """Whether the model's attention can be scored: not for ``attention: none``, whose "weights" are a uniform
    average that says nothing about the input (the Transformer and Marian ignore ``attention``)."""
    return translator.attention != "none"


def word_indices(tokenizer: Any, text: str, ids: Sequence[int]) -> list[int] | None:
    """The whitespace word of ``text`` each of its token ids belongs to.

    Args:
        tokenizer: the tokenizer that encoded ``text`` (``core.text.tokenizers``, or Marian's).
        text: the sentence.
        ids: ``tokenizer.encode(text)``, all of it.

    Returns:
        One word index per id, non-decreasing from 0 to ``len(text.split()) - 1``, or None when the tokens
        cannot be mapped onto ``text.split()``.
    """
    n_words = len(text.split())
    if not ids or n_words == 0:
        return None
    kind = getattr(tokenizer, "kind", "")
    if kind == "char":
        # One id per character of the NFC text; a space belongs to the word before it (it carries no meaning,
        # and merge_subwords needs a word for every token).
        out, word, inside = [], -1, False
        for ch in unicodedata.normalize("NFC", text):
            if ch.isspace():
                inside = False
                out.append(max(word, 0))
            else:
                word += 0 if inside else 1
                inside = True
                out.append(word)
    elif kind in _METASPACE_KINDS:
        # A token starting with "▁" starts a word: Metaspace puts one before every whitespace word (the
        # Punctuation pre-tokenizer may then isolate it: "▁ ¿ qué" is still one word).
        out = word_index_of_tokens([tokenizer.id_to_token(i) for i in ids])
    else:
        # Word tokenizers never join across whitespace, so each whitespace word is tokenised on its own.
        out = [w for w, word in enumerate(text.split()) for _ in tokenizer.encode(word)]
    if len(out) != len(ids) or out[-1] != n_words - 1:
        return None
    return out


def alignment_scores(
    translator: Translator, pairs_with_links: Sequence[GoldPair], batch_size: int = 32
) -> dict[str, float]:
    """Corpus AER of a translation model's attention on gold-aligned pairs, the reference teacher-forced.

    Args:
        translator: the network with its tokenizers (``TranslationModule.translator``).
        pairs_with_links: ``(source, target, sure, possible)`` per sentence; links are ``(source word, target
            word)`` indices over ``source.split()`` / ``target.split()`` (``tasks.translation.grammar``'s
            ``AlignedPair`` is one for en→es; the data module's ``gold_alignments`` gives them for its direction).
        batch_size: sentences per teacher-forced pass.

    Returns:
        ``{}`` for ``attention: none``. A single-head RNN: ``{"aer"}``. A multi-head model (the Transformer, an
        RNN with ``attention: multihead``, Marian): ``"aer"`` = ``"aer_mean_heads"`` (mean of the heads of the last
        decoder layer, index ``"aer_layer"``), ``"aer_best_head"`` and ``"aer_best_head_index"`` (the best single
        head of that layer), ``"aer_best_layer"`` and ``"aer_best_layer_index"`` (the layer whose mean of heads
        scores best). Indices count from 0 and are floats like every score. Sources longer than the model's
        ``max_source_tokens`` are cut as in ``translate`` (links to the words cut off are not scored), and
        sentences whose tokens cannot be mapped onto words are skipped; with nothing scored the AERs are NaN.
    """
    if not has_alignment(translator):
        return {}
    src_tok, tgt_tok = translator.src_tokenizer, translator.tgt_tokenizer
    items = []
    for src, tgt, sure, possible in pairs_with_links:
        src_ids, tgt_ids = src_tok.encode(src), tgt_tok.encode(tgt)
        src_words, tgt_words = word_indices(src_tok, src, src_ids), word_indices(tgt_tok, tgt, tgt_ids)
        if src_words is None or tgt_words is None:
            continue
        # Cut as translate() cuts the source; a target as long as the decoder may ever emit.
        cut_src, cut_tgt = translator.max_source_tokens, translator.max_len
        src_ids, src_words = src_ids[:cut_src], src_words[:cut_src]
        tgt_ids, tgt_words = tgt_ids[:cut_tgt], tgt_words[:cut_tgt]
        n_src, n_tgt = src_words[-1] + 1, tgt_words[-1] + 1

        def kept(links: Sequence[Link], n_src: int = n_src, n_tgt: int = n_tgt) -> list[Link]:
            return [(s, t) for s, t in links if s < n_src and t < n_tgt]

        items.append((src_ids, tgt_ids, src_words, tgt_words, kept(sure), kept(possible)))

    mean: list[AlignmentCounts] = []  # per layer: the mean of its heads
    heads: list[list[AlignmentCounts]] = []  # per layer, per head
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        attention = layer_head_attention_batch(translator, [c[0] for c in chunk], [c[1] for c in chunk])
        for (_, _, src_words, tgt_words, sure, possible), layers in zip(chunk, attention):
            if not mean:
                mean = [AlignmentCounts() for _ in layers]
                heads = [[AlignmentCounts() for _ in range(w.shape[0])] for w in layers]
            for li, w in enumerate(layers):  # w: (H, T, S) tokens
                mean[li].add(argmax_links(merge_subwords(w.mean(0), src_words, tgt_words)), sure, possible)
                if w.shape[0] > 1:
                    for h in range(w.shape[0]):
                        heads[li][h].add(argmax_links(merge_subwords(w[h], src_words, tgt_words)), sure, possible)
    if not mean:
        return {"aer": float("nan")}
    last = len(mean) - 1
    if not translator.multihead:
        return {"aer": mean[last].aer}
    layer_aer = [c.aer for c in mean]
    head_aer = [c.aer for c in heads[last]] or [layer_aer[last]]  # one head: it is the mean
    best_head = min(range(len(head_aer)), key=lambda h: head_aer[h])
    best_layer = min(range(len(layer_aer)), key=lambda li: layer_aer[li])
    return {
        "aer": layer_aer[last],
        "aer_mean_heads": layer_aer[last],
        "aer_layer": float(last),
        "aer_best_head": head_aer[best_head],
        "aer_best_head_index": float(best_head),
        "aer_best_layer": layer_aer[best_layer],
        "aer_best_layer_index": float(best_layer),
    }
