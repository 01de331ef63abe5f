"""Per-layer and per-head cross-attention of translations, teacher-forced.

The translation models hand out one alignment per hypothesis (the last decoder layer's cross-attention,
averaged over heads). To read every layer and head without changing the models, the target is re-run
teacher-forced while forward hooks on the cross-attention modules ask each of them for its weights and keep
them. Teacher forcing on the hypothesis a search produced gives the same attention as the search did (the app's
tests check the last layer's mean against ``translate``'s alignment); teacher forcing on a reference gives the
attention the model puts when producing that reference (what the alignment score reads,
:mod:`tasks.translation.alignment`).

Used by the app's detail view, ``attn-translate translate --heads`` and the alignment score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from core.decoding.fast_paths import eval_mode
from core.text.tokenizers import BOS_ID, PAD_ID
from tasks.translation.inference import Translator
from tasks.translation.models import RNNSeq2Seq, TransformerSeq2Seq
from tasks.translation.models.marian import MarianSeq2Seq

__all__ = ["cross_attention_modules", "layer_head_attention", "layer_head_attention_batch", "target_ids"]


def cross_attention_modules(model: RNNSeq2Seq | TransformerSeq2Seq) -> list[nn.Module]:
    """The cross-attention module of every decoder layer, bottom first (one for the RNN decoder)."""
    return model.cross_attentions


def target_ids(tokenizer: Any, tokens: list[str]) -> list[int]:
    """Ids of output token strings (the hypothesis as ``translate`` reports it).

    Raises:
        ValueError: a token string is not in the vocabulary.
    """
    lookup = getattr(tokenizer, "_ids_by_token", None)
    if lookup is None:
        lookup = {tokenizer.id_to_token(i): i for i in range(tokenizer.vocab_size)}
        tokenizer._ids_by_token = lookup  # built once per loaded model: vocabularies are a few thousand
    try:
        return [lookup[t] for t in tokens]
    except KeyError as err:
        raise ValueError(f"output token {err.args[0]!r} is not in the target vocabulary") from None


def layer_head_attention(translator: Translator, src_ids: list[int], tgt_ids: list[int]) -> list[Tensor]:
    """Cross-attention of every decoder layer and head while emitting ``tgt_ids`` from ``src_ids``.

    Args:
        translator: the network with its tokenizers (``TranslationModule.translator``).
        src_ids: source token ids (as ``translate`` encoded them, truncation included).
        tgt_ids: the output ids, without BOS/EOS.

    Returns:
        One ``(H, T, S)`` float CPU tensor per decoder layer, bottom first; ``H = 1`` for single-head
        mechanisms, ``T = len(tgt_ids)``, ``S = len(src_ids)``.
    """
    return layer_head_attention_batch(translator, [src_ids], [tgt_ids])[0]


def _padded(rows: Sequence[Sequence[int]], device: torch.device) -> Tensor:
    """``(B, max length)`` long tensor of ``rows``, right-padded with PAD."""
    out = torch.full((len(rows), max(len(r) for r in rows)), PAD_ID, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out.to(device)


@torch.no_grad()
def layer_head_attention_batch(
    translator: Translator, src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]]
) -> list[list[Tensor]]:
    """:func:`layer_head_attention` of a batch of sentences in one teacher-forced pass.

    Padding changes nothing a sentence's rows see: padded source positions are masked, and every target row
    is computed from the positions before it (causal self-attention, or the RNN's left-to-right steps), so the
    padding after a shorter target comes later.

    Args:
        translator: the network with its tokenizers (``TranslationModule.translator``).
        src_ids: per sentence, its non-empty source token ids.
        tgt_ids: per sentence, its output ids without BOS/EOS.

    Returns:
        Per sentence, one ``(H, T_b, S_b)`` float CPU tensor per decoder layer, bottom first
        (``T_b = len(tgt_ids[b])``, ``S_b = len(src_ids[b])``).
    """
    if len(src_ids) != len(tgt_ids):
        raise ValueError(f"layer_head_attention_batch: {len(src_ids)} sources but {len(tgt_ids)} targets")
    if not src_ids:
        return []
    model = translator.network
    dev = translator.device
    src = _padded(src_ids, dev)  # (B, S)
    lengths = torch.tensor([len(s) for s in src_ids], dtype=torch.long, device=dev)  # (B,)
    tgt_in = _padded([[BOS_ID, *t] for t in tgt_ids], dev)  # (B, T + 1)
    if isinstance(model, MarianSeq2Seq):  # transformers returns them itself
        with eval_mode(model):
            layers = model.layer_head_attention(src, lengths, tgt_in)  # (B, H, T + 1, S + 1) each
    elif isinstance(model, (RNNSeq2Seq, TransformerSeq2Seq)):
        layers = _hooked_attention(model, src, lengths, tgt_in)  # (B, H, T + 1, S) each
    else:
        raise TypeError(f"no per-layer attention for a {type(model).__name__}")
    # Row t of a sentence with T_b outputs is the step emitting output t; row T_b emits EOS (not shown), and
    # columns past S_b are padding (or, for Marian, the source's appended </s>).
    return [
        [w[b, :, : len(t), : len(s)].float().cpu() for w in layers] for b, (s, t) in enumerate(zip(src_ids, tgt_ids))
    ]


def _hooked_attention(
    model: RNNSeq2Seq | TransformerSeq2Seq, src: Tensor, lengths: Tensor, tgt_in: Tensor
) -> list[Tensor]:
    """Run ``model`` teacher-forced with hooks that keep every cross-attention's weights.

    Returns:
        One ``(B, H, T + 1, S)`` tensor per decoder layer, bottom first (``H = 1`` for single-head mechanisms).
    """
    targets = cross_attention_modules(model)
    captured: list[list[Tensor]] = [[] for _ in targets]

    def want_weights(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        # The models request weights only where they plot them (last layer, search time); ask all layers.
        kwargs["need_weights"] = True
        return args, kwargs

    def keeper(i: int) -> Any:
        def keep(_mod: nn.Module, _args: Any, _kwargs: Any, out: Any) -> None:
            captured[i].append(out.weights.detach())

        return keep

    handles = []
    for i, att in enumerate(targets):
        handles.append(att.register_forward_pre_hook(want_weights, with_kwargs=True))
        handles.append(att.register_forward_hook(keeper(i), with_kwargs=True))
    try:
        with eval_mode(model):
            model(src, lengths, tgt_in, need_weights=False)
    finally:
        for h in handles:
            h.remove()
    per_step = len(targets) == 1 and targets[0] is getattr(getattr(model, "decoder", None), "attention", None)
    out = []
    for steps in captured:
        if per_step:  # one call per output step: (B, H, S) or (B, S) each
            out.append(torch.stack([s if s.dim() == 3 else s[:, None] for s in steps], dim=2))  # (B, H, T + 1, S)
        else:  # one call for all positions: (B, H, T + 1, S)
            out.append(steps[0])
    return out
