"""Encoder-decoder ASR model: time-shortening encoder, attention decoder, joint CTC head.

Encoders (all shorten time by 4x before the sequence model, so attention and CTC run on 40 ms frames):
  * "lstm":        conv2d subsampling x4 -> BiLSTM stack (default; cheap on CPU).
  * "pblstm":      BiLSTM -> 2 pyramidal BiLSTM layers that concatenate frame pairs (Listen, Attend
                   and Spell); the x4 comes from the pyramid instead of convolutions.
  * "transformer": conv2d subsampling x4 -> sinusoidal positions -> Transformer encoder layers.
  * "conformer":   conv2d subsampling x4 -> Conformer blocks (FFN/2, MHSA, depthwise conv, FFN/2).

The decoder is ``core.layers.AttentionalRNNDecoder`` (an LSTM, Listen-Attend-Spell style: the previous
context joins the input) attending over the encoder output with any `core.attention` mechanism
(location-aware by default). Key projections are computed once per utterance (`precompute`) and the
previous step's weights are carried with `attn.accumulate`, for training and beam search alike. Self-attention
in the transformer/conformer encoders is ``core.attention`` multi-head attention too (bool masks,
True = attend: one convention everywhere).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.attention import attention_options as attention_options_for  # the argument has its name
from core.attention import build_attention, lengths_to_mask
from core.layers import AttentionalRNNDecoder, SinusoidalPositions, TransformerEncoderLayer

__all__ = ["ASRModel", "SpeechEncoder", "subsampled_lengths", "upgrade_state_dict_v1"]


def subsampled_lengths(lengths: Tensor) -> Tensor:
    """Frame counts after two stride-2 convs (kernel 3, padding 1): `ceil(ceil(L/2)/2)`."""
    return (lengths + 1).div(2, rounding_mode="floor").add(1).div(2, rounding_mode="floor")


def _zero_padding(x: Tensor, lengths: Tensor, dim: int) -> Tensor:
    """Zero the positions at or past each sequence's length along `dim` (`x` is `(B, ...)`)."""
    keep = lengths_to_mask(lengths.to(x.device), x.shape[dim])  # (B, T) True = valid
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[dim] = x.shape[dim]
    return x.masked_fill(~keep.view(shape), 0.0)


class ConvSubsampling(nn.Module):
    """Two stride-2 conv2d layers over (time, freq): `(B, T, F)` -> `(B, ceil(T/4), d_out)`.

    Frames past each length are zeroed before each conv, so the last valid output frames see the
    same zeros as the conv's own padding would give an utterance alone in its batch: the output for
    an utterance does not depend on what it is batched with (normalised padding is not zero, and
    a conv of zeros is its bias, not zero).
    """

    def __init__(self, n_mels: int, channels: int, d_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        f_out = (((n_mels + 1) // 2) + 1) // 2
        self.proj = nn.Linear(channels * f_out, d_out)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Args: x `(B, T, F)`, lengths `(B,)`. Returns `(B, T', d_out)`, lengths `(B,)`."""
        conv1, act1, conv2, act2 = self.conv
        y = act1(conv1(_zero_padding(x, lengths, 1).unsqueeze(1)))  # (B, 1, T, F) -> (B, C, T/2, F/2)
        y = act2(conv2(_zero_padding(y, (lengths + 1).div(2, rounding_mode="floor"), 2)))  # (B, C, T', F')
        b, c, t, f = y.shape
        y = self.proj(y.permute(0, 2, 1, 3).reshape(b, t, c * f))  # (B, T', C*F') -> (B, T', d_out)
        return y, subsampled_lengths(lengths)


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence within its own length; padding stays in place. `(B, T, D)` -> `(B, T, D)`."""
    t = x.shape[1]
    ar = torch.arange(t, device=x.device)[None, :]  # (1, T)
    lens = lengths.to(x.device)[:, None]  # (B, 1)
    idx = torch.where(ar < lens, lens - 1 - ar, ar)  # (B, T)
    return x.gather(1, idx[..., None].expand_as(x))


class BiLSTM(nn.Module):
    """Bidirectional LSTM stack on padded batches without packing.

    Why not `pack_padded_sequence`: on CPU, autograd of a packed LSTM narrows the packed gate
    tensor once per time step and each narrow's backward materialises a full-size zero tensor,
    which made backward ~10x slower than forward here. Instead each direction is a plain
    unidirectional LSTM; the backward one reads every sequence reversed within its length, so
    padding never leaks into it and the result equals the packed one.

    Args:
        input_size: input features.
        hidden: size per direction.
        layers: stacked bidirectional layers.
        dropout: dropout between layers.
    """

    def __init__(self, input_size: int, hidden: int, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.fwd = nn.ModuleList()
        self.bwd = nn.ModuleList()
        for i in range(layers):
            d = input_size if i == 0 else 2 * hidden
            self.fwd.append(nn.LSTM(d, hidden, batch_first=True))
            self.bwd.append(nn.LSTM(d, hidden, batch_first=True))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Args: x `(B, T, D)`, lengths `(B,)`. Returns `(B, T, 2H)` (values past a length are junk)."""
        for i, (f, b) in enumerate(zip(self.fwd, self.bwd)):
            if i > 0:
                x = self.drop(x)
            yf = f(x)[0]  # (B, T, H)
            yb = reverse_padded(b(reverse_padded(x, lengths))[0], lengths)  # (B, T, H)
            x = torch.cat([yf, yb], dim=-1)  # (B, T, 2H)
        return x


class ConformerBlock(nn.Module):
    """Conformer block (Gulati et al. 2020): half FFN, MHSA, depthwise-conv module, half FFN."""

    def __init__(self, d: int, heads: int, ff_mult: int = 4, kernel: int = 15, dropout: float = 0.1) -> None:
        super().__init__()

        def ffn() -> nn.Sequential:
            return nn.Sequential(
                nn.LayerNorm(d),
                nn.Linear(d, ff_mult * d),
                nn.SiLU(),
                nn.Dropout(dropout),
                nn.Linear(ff_mult * d, d),
                nn.Dropout(dropout),
            )

        self.ff1, self.ff2 = ffn(), ffn()
        self.attn_norm = nn.LayerNorm(d)
        self.attn = build_attention("multihead", query_dim=d, key_dim=d, num_heads=heads, dropout=dropout)
        self.conv_norm = nn.LayerNorm(d)
        self.pw1 = nn.Conv1d(d, 2 * d, 1)
        self.dw = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.bn = nn.BatchNorm1d(d)
        self.pw2 = nn.Conv1d(d, d, 1)
        self.drop = nn.Dropout(dropout)
        self.out_norm = nn.LayerNorm(d)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Args: x `(B, T, D)`, mask `(B, T)` bool True = valid. Returns `(B, T, D)`."""
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        x = x + self.drop(self.attn(h, h, h, mask, need_weights=False).context)
        h = self.conv_norm(x).masked_fill(~mask[..., None], 0.0).transpose(1, 2)  # (B, D, T)
        h = F.glu(self.pw1(h), dim=1)  # (B, 2D, T) -> (B, D, T)
        # Mask again: pw1's bias and the GLU turn zeroed padding into non-zero values, which the
        # depthwise conv would mix into the valid frames next to the padding.
        h = h.masked_fill(~mask[:, None, :], 0.0)  # (B, D, T)
        h = self.pw2(F.silu(self.bn(self.dw(h))))
        x = x + self.drop(h.transpose(1, 2))  # (B, T, D)
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x)


class SpeechEncoder(nn.Module):
    """Log-mel frames -> encoder states at 1/4 of the frame rate.

    Args:
        kind: "lstm", "pblstm", "transformer" or "conformer" (see module docstring).
        n_mels: input feature size.
        hidden: LSTM size per direction, or d_model for transformer/conformer.
        layers: sequence-model layers (for "pblstm": 1 + 2 pyramid layers + (layers - 3) plain ones).
        heads: attention heads (transformer/conformer).
        dropout: dropout between layers.
        conv_channels: channels of the conv2d subsampling.
    """

    def __init__(
        self,
        kind: str = "lstm",
        n_mels: int = 80,
        hidden: int = 192,
        layers: int = 3,
        heads: int = 4,
        dropout: float = 0.1,
        conv_channels: int = 32,
    ) -> None:
        super().__init__()
        kinds = ("lstm", "pblstm", "transformer", "conformer")
        if kind not in kinds:
            raise ValueError(f"encoder kind must be one of {kinds}, got {kind!r}")
        self.kind = kind
        self.drop = nn.Dropout(dropout)
        if kind == "lstm":
            self.sub = ConvSubsampling(n_mels, conv_channels, hidden)
            self.rnn = BiLSTM(hidden, hidden, layers, dropout)
            self.output_dim = 2 * hidden
        elif kind == "pblstm":
            self.rnns = nn.ModuleList([BiLSTM(n_mels, hidden)])
            # Pyramid layers read two concatenated frames of the layer below: input 2 * 2H.
            for _ in range(2):
                self.rnns.append(BiLSTM(4 * hidden, hidden))
            for _ in range(max(0, layers - 3)):
                self.rnns.append(BiLSTM(2 * hidden, hidden))
            self.output_dim = 2 * hidden
        else:
            self.sub = ConvSubsampling(n_mels, conv_channels, hidden)
            self.pos = SinusoidalPositions(hidden)
            if kind == "transformer":
                # ReLU feed-forward of 4x width, as in the 2017 Transformer (and format-1 checkpoints)
                self.blocks = nn.ModuleList(
                    [TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout, "relu") for _ in range(layers)]
                )
            else:
                self.blocks = nn.ModuleList([ConformerBlock(hidden, heads, dropout=dropout) for _ in range(layers)])
            self.norm = nn.LayerNorm(hidden)
            self.output_dim = hidden

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode.

        Args:
            feats: normalised log-mel `(B, T, F)`.
            lengths: valid frames `(B,)`.

        Returns:
            `(B, S, output_dim)` states with `S ~= T / 4`, and their lengths `(B,)`.
        """
        if self.kind == "pblstm":
            x, lens = feats, lengths
            for i, rnn in enumerate(self.rnns):
                if i in (1, 2):
                    # Pyramid: (B, T, D) -> (B, T/2, 2D) by concatenating neighbouring frames. Padding
                    # is zeroed first so an odd-length utterance's last frame is paired with a zero
                    # frame whatever it is batched with.
                    x = _zero_padding(x, lens, 1)
                    if x.shape[1] % 2:
                        x = F.pad(x, (0, 0, 0, 1))
                    b, t, d = x.shape
                    x = x.reshape(b, t // 2, 2 * d)
                    lens = (lens + 1).div(2, rounding_mode="floor")
                x = self.drop(rnn(x, lens))
            return x, lens
        x, lens = self.sub(feats, lengths)  # (B, S, hidden)
        if self.kind == "lstm":
            return self.drop(self.rnn(self.drop(x), lens)), lens
        mask = lengths_to_mask(lens, x.shape[1])  # (B, S) True = valid
        x = self.drop(self.pos(x))
        for blk in self.blocks:
            x = blk(x, mask)
        return self.norm(x), lens


class ASRModel(nn.Module):
    """Encoder + attention decoder + CTC head (blank = the pad id 0, never a target).

    Args:
        vocab_size: units including pad/bos/eos/unk.
        n_mels: feature size.
        encoder: encoder kind.
        encoder_dim: encoder size (per direction for LSTMs).
        encoder_layers: encoder layers.
        num_heads: heads for transformer/conformer encoders.
        hidden_dim: decoder LSTM size.
        embed_dim: token embedding size.
        attention: `core.attention` mechanism name.
        attention_options: its extra options (default ``{"hidden_dim": 128}`` / ``{"num_heads": 4}``).
        dropout: dropout everywhere.
        encoder_module: an encoder to use instead of a `SpeechEncoder` (e.g. `tasks.speech.hf_encoder`), called
            as ``encoder_module(inputs, lengths) -> (states, lengths)`` and with an ``output_dim``.
        conv_channels: channels of the encoder's conv2d subsampling (16 halves its cost; unused with
            ``encoder_module``).
    """

    def __init__(
        self,
        vocab_size: int,
        n_mels: int = 80,
        encoder: str = "lstm",
        encoder_dim: int = 192,
        encoder_layers: int = 3,
        num_heads: int = 4,
        hidden_dim: int = 256,
        embed_dim: int = 64,
        attention: str = "location",
        attention_options: dict[str, Any] | None = None,
        dropout: float = 0.1,
        encoder_module: nn.Module | None = None,
        conv_channels: int = 32,
    ) -> None:
        super().__init__()
        encoder_net: Any = (  # any encoder with an output_dim
            encoder_module
            if encoder_module is not None
            else SpeechEncoder(encoder, n_mels, encoder_dim, encoder_layers, num_heads, dropout, conv_channels)
        )
        self.encoder = encoder_net
        opts = attention_options_for(attention, attention_options, hidden_dim=128)
        self.decoder = AttentionalRNNDecoder(
            vocab_size,
            encoder_net.output_dim,
            embed_dim,
            hidden_dim,
            1,
            "lstm",
            attention,
            opts,
            dropout,
            input_feed="context",
        )
        self.ctc_head = nn.Linear(encoder_net.output_dim, vocab_size)

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encoder states `(B, S, D)`, their mask `(B, S)` and CTC log-probs `(B, S, V)` of features `(B, T, F)`
        (or of waveforms `(B, N)` for an `encoder_module` that reads them) and their lengths `(B,)`."""
        enc, lens = self.encoder(feats, lengths)
        mask = lengths_to_mask(lens, enc.shape[1])
        return enc, mask, self.ctc_head(enc).log_softmax(-1)


def _split_in_proj(out: dict[str, Any], prefix: str, key: str, value: Any) -> bool:
    """``torch.nn.MultiheadAttention``'s packed ``in_proj_*`` -> core multi-head ``q/k/v_proj``."""
    for kind in ("weight", "bias"):
        if key == f"{prefix}in_proj_{kind}":
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{prefix}{name}.{kind}"] = part.clone()
            return True
    return False


def upgrade_state_dict_v1(state: dict[str, Any]) -> dict[str, Any]:
    """Format-1 weight names under today's modules: the decoder on the shared attentional RNN decoder, and
    encoder self-attention on core multi-head attention instead of ``torch.nn`` layers."""
    dec = {
        "model.decoder.embed.": "model.decoder.embedding.",
        "model.decoder.attn.": "model.decoder.attention.",
        "model.decoder.cell.": "model.decoder.cells.0.",
        "model.decoder.out.0.": "model.decoder.combine.",
        "model.decoder.out.2.": "model.decoder.out.",
    }
    ffn = {".linear1.": ".ff.0.", ".linear2.": ".ff.3."}
    out: dict[str, Any] = {}
    for key, value in state.items():
        for old, new in dec.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        if key.startswith("model.encoder.blocks."):
            if key.endswith(("in_proj_weight", "in_proj_bias")):
                _split_in_proj(out, key[: key.rfind("in_proj_")], key, value)
                continue
            for old, new in ffn.items():
                key = key.replace(old, new)
        out[key] = value
    return out
