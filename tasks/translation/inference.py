"""Translation with a trained module: the library API (``TranslationModule.translate``) and its result type."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from core.decoding.beam import DecodeResult, beam_search
from core.decoding.fast_paths import eval_mode
from core.errors import ConfigError
from core.text.tokenizers import BOS_ID, EOS_ID, PAD_ID
from tasks.translation.batching import pad_ids

__all__ = ["TranslateMixin", "Translation"]


@dataclass
class Translation:
    """One hypothesis with its alignment.

    Attributes:
        text: detokenized translation.
        score: length-normalised log-probability.
        src_tokens: source subword strings (S).
        tgt_tokens: output subword strings (T).
        attention: (T, S) weights used to emit each output token, or None.
    """

    text: str
    score: float
    src_tokens: list[str]
    tgt_tokens: list[str]
    attention: Tensor | None


class TranslateMixin:
    """``translate`` for :class:`tasks.translation.module.TranslationModule` (needs ``model``, the tokenizers
    and the ``max_len`` / ``max_source_tokens`` / ``length_penalty`` hyper-parameters)."""

    def _decode(self, src: Tensor, src_lengths: Tensor, beam: int, nbest: int, need_weights: bool) -> DecodeResult:
        """Beam search over a padded batch ``src (B, S)``, ``src_lengths (B,)``."""
        model = self.model  # type: ignore[attr-defined]
        assert model is not None
        state = model.init_state(src, src_lengths)
        max_len = min(self.hparams.max_len, int(src_lengths.max()) * 2 + 10)  # type: ignore[attr-defined]

        def step_fn(last: Tensor, st: Any) -> tuple[Tensor, Any, Tensor | None]:
            return model.step(last, st, need_weights)

        return beam_search(
            step_fn,
            state,
            batch_size=src.shape[0],
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            max_len=max_len,
            beam_size=beam,
            length_penalty=self.hparams.length_penalty,  # type: ignore[attr-defined]
            nbest=nbest,
            suppress=(PAD_ID, BOS_ID),
            device=src.device,
        )

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` the model never saw in training (its translation of them is a guess), each once.

        Empty when the model does not know its training words (a pretrained Marian model, or one written
        before they were stored).
        """
        known = self.known_words  # type: ignore[attr-defined]
        return [] if known is None else known.unknown(text)

    @torch.no_grad()
    def translate(
        self,
        texts: str | Sequence[str],
        beam: int = 5,
        nbest: int = 1,
        return_attention: bool = False,
        batch_size: int = 64,
    ) -> Any:
        """Translate one sentence or a list of them.

        Characters never seen in training map to the unknown token (never an error). Inputs longer than
        ``max_source_tokens`` subwords are truncated with a warning.

        Args:
            texts: a source sentence, or a list of them (a string is one sentence, never its characters).
            beam: beam size (1 = greedy).
            nbest: hypotheses per sentence (≤ beam).
            return_attention: return :class:`Translation` objects with (T, S) attention instead of strings.
            batch_size: sentences decoded together.

        Returns:
            ``nbest == 1``: one item per input; else a list of ``nbest`` items per input. Items are
            strings, or :class:`Translation` when ``return_attention``. For a single string, its one result
            (not a list of one).

        Raises:
            core.errors.ConfigError: ``beam`` outside 1-128 or ``nbest`` outside 1-``beam``.
            core.errors.DecodingError: the model gave no hypothesis (non-finite scores).
        """
        if isinstance(texts, str):
            return self.translate([texts], beam, nbest, return_attention, batch_size)[0]
        if not all(isinstance(t, str) for t in texts):
            raise ConfigError("translate() takes a sentence or a list of sentences (strings)")
        if self.model is None:  # type: ignore[attr-defined]
            self.build_model()  # type: ignore[attr-defined]
        if not 1 <= nbest <= beam:
            raise ConfigError(f"need 1 <= nbest <= beam, got nbest={nbest}, beam={beam}")
        src_tok, tgt_tok = self.src_tokenizer, self.tgt_tokenizer  # type: ignore[attr-defined]
        assert src_tok is not None and tgt_tok is not None
        limit = self.hparams.max_source_tokens  # type: ignore[attr-defined]
        encoded = []
        for i, t in enumerate(texts):
            ids = src_tok.encode(t)
            if len(ids) > limit:
                rank_zero_warn(f"input {i} has {len(ids)} subword tokens; truncated to max_source_tokens={limit}")
                ids = ids[:limit]
            encoded.append(ids)
        # Decode in length-sorted batches (little padding), then restore the input order.
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        results: list[Any] = [None] * len(texts)
        device = self.device  # type: ignore[attr-defined]
        with eval_mode(self):  # type: ignore[arg-type]
            for k in range(0, len(order), batch_size):
                idx = order[k : k + batch_size]
                src, lengths = pad_ids([encoded[i] for i in idx])  # (B, S), (B,)
                res = self._decode(src.to(device), lengths.to(device), beam, nbest, return_attention)
                for j, i in enumerate(idx):
                    hyps = []
                    for toks, score, att in zip(res.tokens[j], res.scores[j], res.attention[j]):
                        text = tgt_tok.decode(toks)
                        if return_attention:
                            s_len = max(1, len(encoded[i]))
                            hyps.append(
                                Translation(
                                    text,
                                    float(score),
                                    [src_tok.id_to_token(t) for t in encoded[i]],
                                    [tgt_tok.id_to_token(t) for t in toks],
                                    None if att is None else att[:, :s_len].float().cpu(),
                                )
                            )  # (T, S)
                        else:
                            hyps.append(text)
                    results[i] = hyps[0] if nbest == 1 else hyps
        return results
