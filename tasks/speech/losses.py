"""The training objective of speech recognition: attention cross-entropy on `[BOS, y] -> [y, EOS]`, CTC on the
encoder frames and the guided attention prior (`tasks.speech.guided`), weighted together, plus the count of
utterances whose transcript is too long for CTC.

With ``ctc_weight`` 1 (CTC alone) the objective is CTC only: the attention decoder is not run (its parameters
are frozen by the module, so no gradient is expected of them, also under DDP). The guided prior applies only to
a model whose attention depends on the input: not with ``attention="none"`` (uniform weights: the penalty would be
a constant) nor with CTC alone."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tasks.speech.guided import guided_attention_loss, guided_weight

__all__ = ["SpeechLossMixin"]


class SpeechLossMixin:
    """Losses of :class:`tasks.speech.module.SpeechModule` (needs ``model``, ``stats``, ``specaug``, ``tokenizer``,
    ``reads_waveforms`` and the ``ctc_weight`` / ``label_smoothing`` / ``guided_attention_*`` hyper-parameters)."""

    def _targets(self, tokens: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder inputs `[BOS, y]` and targets `[y, EOS]`, both `(B, L + 1)`, pad elsewhere."""
        tk = self.tokenizer
        b = tokens.shape[0]
        bos = tokens.new_full((b, 1), tk.bos_id)
        inputs = torch.cat([bos, tokens], dim=1)  # (B, L+1)
        targets = torch.cat([tokens, tokens.new_full((b, 1), tk.pad_id)], dim=1)  # (B, L+1)
        targets = targets.scatter(1, lens[:, None], tk.eos_id)  # EOS right after the last real token
        return inputs, targets

    def _losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Attention cross-entropy `ce`, CTC `ctc` and their weighted sum `loss` (all per target unit).

        With CTC, also `ctc_infeasible`: how many utterances have a transcript too long for their
        encoder frames (CTC needs one frame per unit plus one per repeated unit). `zero_infinity`
        zeroes their CTC loss, so they only train the attention decoder; they are counted, not
        filtered out, because the attention loss is still valid for them. CTC alone (``ctc_weight``
        1) has no `ce`: `loss` is `ctc`. With the guided prior, also `guided`.
        """
        if self.reads_waveforms:
            enc, mask, ctc_lp = self.model.encode(batch["wavs"], batch["wav_lens"])  # (B, N) audio in
        else:
            feats = self.stats(batch["feats"])  # (B, T, F)
            if self.specaug is not None and self.training:
                feats = self.specaug(feats)
            enc, mask, ctc_lp = self.model.encode(feats, batch["feat_lens"])  # (B, S, D), (B, S), (B, S, V)
        hp = self.hparams
        w = hp.ctc_weight
        out: dict[str, Tensor] = {}
        ga, att = 0.0, None
        if w < 1.0:  # CTC alone neither trains nor runs the attention decoder
            inputs, targets = self._targets(batch["tokens"], batch["token_lens"])
            ga = guided_weight(
                hp.guided_attention_weight,
                hp.guided_attention_steps,
                self.global_step if self._trainer else 0,
                hp.guided_attention_final_weight,
            )
            # A training prior (validation losses stay comparable across settings), and only for attention that
            # depends on the input: "none"'s uniform weights would add a constant.
            ga = ga if self.training and hp.attention != "none" else 0.0
            logits, att = self.model.decoder(enc, mask, inputs, need_weights=ga > 0)  # (B, L+1, V), (B, L+1, S)
            out["ce"] = F.cross_entropy(
                logits.transpose(1, 2),
                targets,
                ignore_index=self.tokenizer.pad_id,
                label_smoothing=hp.label_smoothing,
            )
        if w > 0:
            enc_lens = mask.sum(-1)
            ctc = F.ctc_loss(
                ctc_lp.transpose(0, 1).float(),
                batch["tokens"],
                enc_lens,
                batch["token_lens"],
                blank=self.tokenizer.pad_id,
                reduction="sum",
                zero_infinity=True,
            )
            out["ctc"] = ctc / batch["token_lens"].sum().clamp_min(1)  # per unit, like the CE
            out["ctc_infeasible"] = self._ctc_infeasible(batch["tokens"], batch["token_lens"], enc_lens)
            out["loss"] = out["ctc"] if w >= 1.0 else (1 - w) * out["ce"] + w * out["ctc"]
        else:
            out["loss"] = out["ce"]
        if ga > 0 and att is not None:
            out["guided"] = guided_attention_loss(att, batch["token_lens"] + 1, mask.sum(-1), hp.guided_attention_sigma)
            out["loss"] = out["loss"] + ga * out["guided"]
        return out

    @staticmethod
    def _ctc_infeasible(tokens: Tensor, token_lens: Tensor, enc_lens: Tensor) -> Tensor:
        """Number of utterances whose CTC loss is infinite, as a device tensor (no host sync).

        Args:
            tokens: `(B, L)` targets; token_lens: `(B,)`; enc_lens: `(B,)` encoder frames.

        Returns:
            Scalar float tensor: count of `enc_len < token_len + repeats` (a repeated unit needs a
            blank between its copies).
        """
        valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < token_lens[:, None]  # (B, L)
        repeats = ((tokens[:, 1:] == tokens[:, :-1]) & valid[:, 1:]).sum(1)  # (B,)
        return (enc_lens.to(token_lens.device) < token_lens + repeats).sum().float()
