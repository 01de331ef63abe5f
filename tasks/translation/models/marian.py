"""A pretrained MarianMT (``transformers``) inside the translation task, decoded by ``core.decoding.beam``.

``--model.arch marian --model.pretrained <hub-id-or-folder>`` fine-tunes one of the Helsinki-NLP
``opus-mt-*`` models (or any MarianMT folder) with the task's data, losses, BLEU/chrF, checkpoints and beam
search. :class:`MarianSeq2Seq` offers the interface of the other translation models (``forward``,
``init_state``, ``step``) over our id space (``tasks.translation.marian_tokenizer``: Marian's ids + 2):

* ids in: our PAD -> Marian ``<pad>``, our BOS -> its ``decoder_start_token_id``, the rest minus 2; every
  source gets Marian's ``</s>`` after its last token, as Marian's tokenizer adds it;
* logits out: Marian's, with its ``<pad>`` logit repeated for our PAD and BOS columns (so that label smoothing
  sees real model outputs there, as in the other models); decoding never emits them (nor Marian's own pad);
* the decoding state is tensors only, split as ``core.decoding.beam`` wants it: encoder outputs, mask and the
  cross-attention keys/values under ``source`` (computed by the first step), the self-attention KV cache
  under ``cache`` (reordered with ``state.reorder``). Each step rebuilds ``transformers``' cache object from
  them and reads the grown tensors back, so beam search can select rows of every part;
* attention: the last decoder layer's cross-attention (``output_attentions``, run with eager attention only
  when weights are asked for), averaged over heads or per head. Its columns are the source tokens plus the
  appended ``</s>`` (callers keep the first ``len(source)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from core.decoding.beam import DecoderState
from core.decoding.fast_paths import step_log_probs
from core.errors import ConfigError
from core.io.pretrained import build_from_config, hf_name, load_pretrained, read_model_type, resolve_pretrained
from core.text.tokenizers import BOS_ID
from core.train.freeze import FreezePolicy, attn_implementation
from tasks.translation.marian_tokenizer import OFFSET, read_tokenizer_files

if TYPE_CHECKING:
    from transformers.models.marian.modeling_marian import MarianMTModel

__all__ = ["MarianSeq2Seq", "load_marian", "marian_network"]

OPTION = "--model.pretrained"


def _token_id(name: str, value: int | float | list[int] | None) -> int:
    """A special token's id from the Marian config, as ``int``; the config's typing also allows None or a list
    (a config without this token, or with several end tokens), which this model cannot use."""
    if not isinstance(value, (int, float)):
        raise ConfigError(f"marian config: {name} = {value!r}, expected one token id")
    return int(value)


class MarianSeq2Seq(nn.Module):
    """``transformers.MarianMTModel`` with the task's model interface.

    Args:
        marian: the pretrained (or rebuilt) ``MarianMTModel``.
        trainable_blocks: -1 fine-tune everything; ``k > 0`` only the last ``k`` decoder layers (embeddings,
            encoder and lower decoder layers frozen). 0 is refused: a Marian model has no new layers that could
            train while it is frozen (hence no ``unfreeze_after_steps`` either).
    """

    def __init__(self, marian: nn.Module, trainable_blocks: int = -1) -> None:
        super().__init__()
        # Imported here: transformers is slow to import and only this architecture needs it (it is loaded by now).
        from transformers.models.marian.modeling_marian import MarianMTModel

        # load_marian / marian_network only build "marian" model types (core.io.pretrained.MODEL_TYPES), which
        # transformers' AutoModelForSeq2SeqLM makes into a MarianMTModel.
        assert isinstance(marian, MarianMTModel), f"expected a MarianMTModel, got {type(marian).__name__}"
        cfg = marian.config
        if trainable_blocks == 0:
            raise ConfigError(
                "--model.trainable_blocks=0 leaves nothing of a marian model to train (it has no new "
                "layers): use -1 (all) or the number of top decoder layers to fine-tune"
            )
        self.marian: MarianMTModel = marian
        self.m_pad, self.m_eos = (
            _token_id("pad_token_id", cfg.pad_token_id),
            _token_id("eos_token_id", cfg.eos_token_id),
        )
        start = cfg.decoder_start_token_id
        self.m_start = int(self.m_pad if start is None else start)
        self.vocab_size = int(cfg.decoder_vocab_size or cfg.vocab_size) + OFFSET
        self.max_positions = int(cfg.max_position_embeddings)
        blocks = list(marian.model.decoder.layers)
        self.freeze_policy = FreezePolicy(
            marian,
            blocks,
            trainable_blocks,
            None,
            never=("model.encoder.embed_positions.", "model.decoder.embed_positions."),
        )

    def train(self, mode: bool = True) -> MarianSeq2Seq:
        super().train(mode)
        if mode:
            self.freeze_policy.fix_modes()
        return self

    # ------------------------------------------------------------------ ids
    def to_marian(self, ids: Tensor) -> Tensor:
        """Our ids ``(...)`` -> Marian's: PAD -> ``<pad>``, BOS -> the decoder start, the rest minus 2."""
        special = torch.where(ids == BOS_ID, torch.full_like(ids, self.m_start), torch.full_like(ids, self.m_pad))
        return torch.where(ids >= OFFSET, ids - OFFSET, special)

    def _source(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``src (B, S)`` -> Marian input ids ``(B, S + 1)`` with ``</s>`` after each source, and their mask."""
        m = self.to_marian(src)
        m = torch.cat([m, m.new_full((m.shape[0], 1), self.m_pad)], dim=1)  # (B, S + 1)
        lengths = src_lengths.to(m.device).long()
        m = m.scatter(1, lengths[:, None], self.m_eos)
        mask = torch.arange(m.shape[1], device=m.device)[None, :] <= lengths[:, None]  # (B, S + 1) True = token
        return m, mask

    def _our_logits(self, logits: Tensor) -> Tensor:
        """Marian logits ``(..., V)`` -> ours ``(..., V + 2)``: its ``<pad>`` logit also in the PAD/BOS columns."""
        pad = logits[..., self.m_pad : self.m_pad + 1]
        return torch.cat([pad, pad, logits], dim=-1)

    # ------------------------------------------------------------------ training
    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, need_weights: bool = False, unpadded: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced logits ``(B, T, V + 2)`` and the last layer's cross-attention averaged over heads
        ``(B, T, S + 1)`` (or None). ``unpadded`` is accepted for interface parity (the mask is needed anyway:
        the appended ``</s>`` sits at each source's own length)."""
        del unpadded
        ids, mask = self._source(src, src_lengths)
        with attn_implementation(self.marian, "eager") if need_weights else nullcontext():
            out = self.marian(
                input_ids=ids,
                attention_mask=mask.long(),
                decoder_input_ids=self.to_marian(tgt_in),
                use_cache=False,
                output_attentions=need_weights,
            )
        weights = out.cross_attentions[-1].mean(dim=1) if need_weights else None  # (B, H, T, S+1) -> (B, T, S+1)
        return self._our_logits(out.logits), weights

    def layer_head_attention(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> list[Tensor]:
        """Teacher-forced cross-attention of every decoder layer and head: ``(B, H, T, S + 1)`` each, bottom first."""
        ids, mask = self._source(src, src_lengths)
        with attn_implementation(self.marian, "eager"):
            out = self.marian(
                input_ids=ids,
                attention_mask=mask.long(),
                decoder_input_ids=self.to_marian(tgt_in),
                use_cache=False,
                output_attentions=True,
            )
        return list(out.cross_attentions)

    # ------------------------------------------------------------------ decoding
    def init_state(self, src: Tensor, src_lengths: Tensor) -> DecoderState:
        """Encoder outputs and mask under ``source``; no cache yet (the first step makes it)."""
        ids, mask = self._source(src, src_lengths)
        enc = self.marian.get_encoder()(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, S+1, D)
        return DecoderState(source={"enc": enc, "mask": mask})

    def step(
        self, last_tokens: Tensor, state: DecoderState, need_weights: bool = False, per_head: bool = False
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One step: ``last_tokens (N,)`` -> log-probs ``(N, V + 2)``, the new state, cross-attention ``(N, S + 1)``
        (``(N, H, S + 1)`` with ``per_head``) or None."""
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        src: dict[str, Any] = state.source
        own = list(state.cache or [])
        if own and state.reorder is not None:  # follow the beams: each row continues its parent's prefix
            rows = state.reorder.to(own[0][0].device)
            own = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in own]
        cross = src.get("cross")
        if cross is None:  # first step: the layers project the encoder outputs (kept below)
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        else:
            cache = EncoderDecoderCache([(*own[i], *cross[i]) for i in range(len(cross))])
        ids = self.to_marian(last_tokens)[:, None]  # (N,) -> (N, 1)
        with attn_implementation(self.marian, "eager") if need_weights else nullcontext():
            out = self.marian.model.decoder(
                input_ids=ids,
                encoder_hidden_states=src["enc"],
                encoder_attention_mask=src["mask"].long(),
                cache=cache,
                use_cache=True,
                output_attentions=need_weights,
            )
        h = out.last_hidden_state[:, 0]  # (N, 1, D) -> (N, D)
        logits = self.marian.lm_head(h) + self.marian.final_logits_bias  # (N, V)
        log_probs = step_log_probs(self._our_logits(logits).float())  # (N, V + 2)
        log_probs[:, self.m_pad + OFFSET] = float("-inf")  # Marian's own <pad> is never an output either
        kv = out.cache
        new_own = [(layer.keys, layer.values) for layer in kv.self_attention_cache.layers]  # (N, H, t+1, Dh) each
        if cross is None:
            src = {**src, "cross": [(layer.keys, layer.values) for layer in kv.cross_attention_cache.layers]}
        weights = None
        if need_weights:
            w = out.cross_attentions[-1][:, :, 0]  # (N, H, 1, S+1) -> (N, H, S+1)
            weights = w if per_head else w.mean(dim=1)  # (N, S+1) averaged over heads
        return log_probs, DecoderState(source=src, cache=new_own), weights


def load_marian(pretrained: str | None) -> tuple[nn.Module, dict[str, bytes], dict[str, Any]]:
    """The pretrained ``MarianMTModel`` named by ``--model.pretrained``, its tokenizer files and its plain config.

    Returns:
        ``(model, tokenizer files, {"source", "model_type", "config"})``.

    Raises:
        ConfigError: no name, not a Marian model, missing tokenizer files, weights that do not fit (named).
    """
    if not pretrained:
        raise ConfigError(f"--model.arch marian needs {OPTION} <hub-id-or-folder> (e.g. Helsinki-NLP/opus-mt-en-es)")
    folder = resolve_pretrained(pretrained, OPTION)
    read_model_type(folder, "translation", OPTION)
    files = read_tokenizer_files(folder, f"{OPTION}={folder}")
    model, config = load_pretrained(folder, "translation", OPTION)
    return model, files, {"source": hf_name(pretrained), "model_type": "marian", "config": config}


def marian_network(
    info: dict[str, Any], backbone: nn.Module | None, vocab_size: int, trainable_blocks: int, longest: int
) -> MarianSeq2Seq:
    """The task's Marian network, checked against its tokenizer and the length options.

    Args:
        info: ``{"source", "model_type", "config"}`` (:func:`load_marian`, or a checkpoint's, untrusted).
        backbone: the loaded model, or None to rebuild it from ``info["config"]`` (offline).
        vocab_size: our target vocabulary size (the tokenizer's + 2).
        trainable_blocks: see :class:`MarianSeq2Seq`.
        longest: the longest source or output the options allow (tokens).

    Raises:
        ConfigError: tokenizer and weights of different models, or lengths beyond the model's positions.
    """
    if backbone is None:
        source, config = "--model.pretrained_config", info.get("config")
        if not isinstance(config, Mapping):  # untrusted: build_from_config checks the rest
            raise ConfigError(f"{source}: pretrained config is a {type(config).__name__}, expected an object")
        backbone = build_from_config(config, "translation", source)
    model = MarianSeq2Seq(backbone, trainable_blocks)
    if model.vocab_size != vocab_size:
        raise ConfigError(
            f"marian model {info.get('source')}: its tokenizer has {vocab_size - OFFSET} tokens, its "
            f"vocab_size is {model.vocab_size - OFFSET}: tokenizer and weights are from different models"
        )
    if longest + 1 > model.max_positions:  # + BOS / the appended </s>
        raise ConfigError(
            f"--model.max_len / --model.max_source_tokens must stay below the marian model's "
            f"{model.max_positions} positions, got {longest}"
        )
    return model
