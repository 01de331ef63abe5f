"""The training objective of speech recognition: attention cross-entropy on `[BOS, y] -> [y, EOS]`, CTC on the
encoder frames and the guided attention prior (`tasks.speech.guided`), weighted together, plus the count of
utterances whose transcript is too long for CTC.

With ``ctc_weight`` 1 (CTC alone) the objective is CTC only: the attention decoder is not run (its parameters
are frozen by the task when it builds the network, so no gradient is expected of them, also under DDP). The
guided prior applies only to a model whose attention depends on the input: not with ``attention="none"`` (uniform
weights: the penalty would be a constant) nor with CTC alone."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from core.text.tokenizers import BaseTokenizer
from tasks.speech.batching import SpeechBatch
from tasks.speech.guided import guided_attention_loss, guided_weight
from tasks.speech.network import SpeechNetwork

__all__ = ["LossOptions", "ctc_infeasible", "decoder_targets", "speech_losses"]


@dataclass(frozen=True)
class LossOptions:
    """The options of the objective (``SpeechModule``'s of the same names).

    Attributes:
        ctc_weight: weight of CTC (0 attention only, 1 CTC alone).
        label_smoothing: of the attention cross-entropy.
        attention: the decoder's mechanism (``"none"`` has no attention to guide).
        guided_attention_weight, guided_attention_sigma, guided_attention_steps, guided_attention_final_weight:
            the guided attention prior and how it fades (`tasks.speech.guided.guided_weight`).
    """

    ctc_weight: float
    label_smoothing: float
    attention: str
    guided_attention_weight: float = 0.0
    guided_attention_sigma: float = 0.2
    guided_attention_steps: int | None = None
    guided_attention_final_weight: float = 0.0


def decoder_targets(tokens: Tensor, lens: Tensor, tokenizer: BaseTokenizer) -> tuple[Tensor, Tensor]:
    """Decoder inputs `[BOS, y]` and targets `[y, EOS]`, both `(B, L + 1)`, pad elsewhere.

    Args:
        tokens: `(B, L)` unit ids, padded.
        lens: `(B,)` valid units.
        tokenizer: the units (its bos, eos and pad ids).
    """
    b = tokens.shape[0]
    bos = tokens.new_full((b, 1), tokenizer.bos_id)
    inputs = torch.cat([bos, tokens], dim=1)  # (B, L+1)
    targets = torch.cat([tokens, tokens.new_full((b, 1), tokenizer.pad_id)], dim=1)  # (B, L+1)
    targets = targets.scatter(1, lens[:, None], tokenizer.eos_id)  # EOS right after the last real token
    return inputs, targets


def speech_losses(
    network: SpeechNetwork, batch: SpeechBatch, tokenizer: BaseTokenizer, options: LossOptions, step: int
) -> dict[str, Tensor]:
    """Attention cross-entropy `ce`, CTC `ctc` and their weighted sum `loss` (all per target unit) of a batch.

    With CTC, also `ctc_infeasible`: how many utterances have a transcript too long for their
    encoder frames (CTC needs one frame per unit plus one per repeated unit). `zero_infinity`
    zeroes their CTC loss, so they only train the attention decoder; they are counted, not
    filtered out, because the attention loss is still valid for them. CTC alone (``ctc_weight``
    1) has no `ce`: `loss` is `ctc`. With the guided prior (in training only), also `guided`.

    Args:
        network: the network (in training mode for SpecAugment and the guided prior).
        batch: a non-empty batch.
        tokenizer: the units.
        options: the objective's options.
        step: the optimizer step (the guided prior fades with it).
    """
    enc, mask, ctc_lp = network.encode_batch(
        batch["feats"], batch["feat_lens"], batch.get("wavs"), batch.get("wav_lens")
    )  # (B, S, D), (B, S), (B, S, V)
    w = options.ctc_weight
    out: dict[str, Tensor] = {}
    ga, att = 0.0, None
    if w < 1.0:  # CTC alone neither trains nor runs the attention decoder
        inputs, targets = decoder_targets(batch["tokens"], batch["token_lens"], tokenizer)
        ga = guided_weight(
            options.guided_attention_weight,
            options.guided_attention_steps,
            step,
            options.guided_attention_final_weight,
        )
        # A training prior (validation losses stay comparable across settings), and only for attention that
        # depends on the input: "none"'s uniform weights would add a constant.
        ga = ga if network.training and options.attention != "none" else 0.0
        logits, att = network.decoder(enc, mask, inputs, need_weights=ga > 0)  # (B, L+1, V), (B, L+1, S)
        out["ce"] = F.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=tokenizer.pad_id, label_smoothing=options.label_smoothing
        )
    if w > 0:
        enc_lens = mask.sum(-1)
        ctc = F.ctc_loss(
            ctc_lp.transpose(0, 1).float(),
            batch["tokens"],
            enc_lens,
            batch["token_lens"],
            blank=tokenizer.pad_id,
            reduction="sum",
            zero_infinity=True,
        )
        out["ctc"] = ctc / batch["token_lens"].sum().clamp_min(1)  # per unit, like the CE
        out["ctc_infeasible"] = ctc_infeasible(batch["tokens"], batch["token_lens"], enc_lens)
        out["loss"] = out["ctc"] if w >= 1.0 else (1 - w) * out["ce"] + w * out["ctc"]
    else:
        out["loss"] = out["ce"]
    if ga > 0 and att is not None:
        sigma = options.guided_attention_sigma
        out["guided"] = guided_attention_loss(att, batch["token_lens"] + 1, mask.sum(-1), sigma)
        out["loss"] = out["loss"] + ga * out["guided"]
    return out


def ctc_infeasible(tokens: Tensor, token_lens: Tensor, enc_lens: Tensor) -> Tensor:
    """Number of utterances whose CTC loss is infinite, as a device tensor (no host sync).

    Args:
        tokens: `(B, L)` targets.
        token_lens: `(B,)` valid targets.
        enc_lens: `(B,)` encoder frames.

    Returns:
        Scalar float tensor: count of `enc_len < token_len + repeats` (a repeated unit needs a
        blank between its copies).
    """
    valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < token_lens[:, None]  # (B, L)
    repeats = ((tokens[:, 1:] == tokens[:, :-1]) & valid[:, 1:]).sum(1)  # (B,)
    return (enc_lens.to(token_lens.device) < token_lens + repeats).sum().float()
