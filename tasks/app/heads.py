"""Per-layer and per-head cross-attention of one translation, for the app's detail view.

The translation models hand out one alignment per hypothesis (the last decoder layer's cross-attention,
averaged over heads). To show every layer and head without changing the models, the chosen hypothesis
is re-run teacher-forced while forward hooks on the cross-attention modules ask each of them for its
weights and keep them. Teacher forcing on the hypothesis the search produced gives the same attention
as the search did (the test checks the last layer's mean against ``translate``'s alignment).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from core.inference import eval_mode
from core.tokenizers import BOS_ID

__all__ = ["cross_attention_modules", "layer_head_attention", "target_ids"]


def cross_attention_modules(model: nn.Module) -> list[nn.Module]:
    """The cross-attention module of every decoder layer, bottom first (one for the RNN decoder)."""
    if hasattr(model, "dec_layers") and isinstance(model.dec_layers, nn.ModuleList):  # Transformer
        return [layer.cross_attn for layer in model.dec_layers]
    return [model.decoder.attention]  # RNN (core.layers.AttentionalRNNDecoder): queried once per output step


def target_ids(tokenizer: Any, tokens: list[str]) -> list[int]:
    """Ids of output token strings (the hypothesis as ``translate`` reports it).

    Raises:
        ValueError: a token string is not in the vocabulary.
    """
    lookup = getattr(tokenizer, "_app_token_ids", None)
    if lookup is None:
        lookup = {tokenizer.id_to_token(i): i for i in range(tokenizer.vocab_size)}
        tokenizer._app_token_ids = lookup  # built once per loaded model: vocabularies are a few thousand
    try:
        return [lookup[t] for t in tokens]
    except KeyError as err:
        raise ValueError(f"output token {err.args[0]!r} is not in the target vocabulary") from None


@torch.no_grad()
def layer_head_attention(module: Any, src_ids: list[int], tgt_ids: list[int]) -> list[Tensor]:
    """Cross-attention of every decoder layer and head while emitting ``tgt_ids`` from ``src_ids``.

    Args:
        module: a ``TranslationModule`` with its network built.
        src_ids: source token ids (as ``translate`` encoded them, truncation included).
        tgt_ids: the hypothesis' output ids, without BOS/EOS.

    Returns:
        One ``(H, T, S)`` float CPU tensor per decoder layer, bottom first; ``H = 1`` for single-head
        mechanisms, ``T = len(tgt_ids)``, ``S = len(src_ids)``.
    """
    model = module.model
    t = len(tgt_ids)
    if hasattr(model, "layer_head_attention"):  # a model that returns them itself (a pretrained Marian)
        with eval_mode(module):
            dev = module.device
            src = torch.tensor([src_ids], dtype=torch.long, device=dev)  # (1, S)
            lengths = torch.tensor([len(src_ids)], dtype=torch.long, device=dev)  # (1,)
            tgt_in = torch.tensor([[BOS_ID, *tgt_ids]], dtype=torch.long, device=dev)  # (1, T + 1)
            layers = model.layer_head_attention(src, lengths, tgt_in)  # (1, H, T + 1, S + 1) each
        return [w[0, :, :t, : len(src_ids)].float().cpu() for w in layers]
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
        with eval_mode(module):
            dev = module.device
            src = torch.tensor([src_ids], dtype=torch.long, device=dev)  # (1, S)
            lengths = torch.tensor([len(src_ids)], dtype=torch.long, device=dev)  # (1,)
            tgt_in = torch.tensor([[BOS_ID, *tgt_ids]], dtype=torch.long, device=dev)  # (1, T + 1)
            model(src, lengths, tgt_in, need_weights=False)
    finally:
        for h in handles:
            h.remove()
    per_step = len(targets) == 1 and targets[0] is getattr(getattr(model, "decoder", None), "attention", None)
    out = []
    for steps in captured:
        if per_step:  # one call per output step: (1, H, S) or (1, S) each
            w = torch.stack([s[0] if s.dim() == 3 else s for s in steps], dim=1)  # (H, T + 1, S)
        else:  # one call for all positions: (1, H, T + 1, S)
            w = steps[0][0]
        out.append(w[:, :t].float().cpu())  # the last row emits EOS, which the hypothesis does not show
    return out
