"""Checkpoints of format 1 (before one vocabulary of names and the shared decoder layers) still load.

Each test writes what the earlier code wrote -- its weight names, its hyper-parameter names, ``format: 1``
-- from a model of today's code, loads it back through the safe loader and checks the outputs are the
same. (Checkpoints actually written by the earlier code were checked the same way when format 2 was
introduced; benchmarks/RESULTS.md records it.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import run_once

OLD_HPARAMS = {
    "translation": {
        "embed_dim": "emb_dim",
        "encoder_layers": "enc_layers",
        "decoder_layers": "dec_layers",
        "ffn_dim": "ff_dim",
        "beam_size": "val_beam",
        "plot_examples": "num_plot_sentences",
        "max_len": "max_decode_len",
    },
    "captioning": {"encoder_dim": "feat_dim", "beam_size": "val_beam_size", "plot_examples": "plot_images"},
    "speech": {"encoder_dim": "encoder_hidden", "num_heads": "encoder_heads", "hidden_dim": "decoder_hidden"},
}
NEW_ONLY = ("optimizer", "betas", "eps", "min_lr_ratio")


def _old_translation_key(k: str) -> str:
    return re.sub(
        r"^model\.decoder\.(embedding|cells|bridge|key_proj|attention|combine|pre_out|out)\b",
        lambda m: "model." + ("tgt_embedding" if m.group(1) == "embedding" else m.group(1)),
        k,
    )


def _old_captioning_key(k: str) -> str:
    k = k.removeprefix("model.")  # format 1 kept the encoder and decoder on the module itself
    for new, old in (
        ("decoder.embedding.", "decoder.embed."),
        ("decoder.attention.", "decoder.attn."),
        ("decoder.bridge_cell.", "decoder.init_c."),
        ("decoder.bridge.", "decoder.init_h."),
        ("decoder.cells.0.", "decoder.cell."),
    ):
        if k.startswith(new):
            return old + k[len(new) :]
    return k


def _old_speech_state(state: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in state.items():
        for new, old in (
            ("model.decoder.embedding.", "model.decoder.embed."),
            ("model.decoder.attention.", "model.decoder.attn."),
            ("model.decoder.cells.0.", "model.decoder.cell."),
            ("model.decoder.combine.", "model.decoder.out.0."),
            ("model.decoder.out.", "model.decoder.out.2."),
        ):
            if k.startswith(new):
                k = old + k[len(new) :]
                break
        m = re.match(r"^(model\.encoder\.blocks\.\d+\.(?:self_attn|attn)\.)([qkv])_proj\.(weight|bias)$", k)
        if m:  # torch.nn.MultiheadAttention packed q, k, v into one in_proj tensor
            key = f"{m.group(1)}in_proj_{m.group(3)}"
            out.setdefault(key, [None, None, None])["qkv".index(m.group(2))] = v
            continue
        out[
            k.replace(".ff.0.", ".linear1.").replace(".ff.3.", ".linear2.")
            if k.startswith("model.encoder.blocks.") and ".ff." in k and ".ff1." not in k and ".ff2." not in k
            else k
        ] = v
    return {k: torch.cat(v) if isinstance(v, list) else v for k, v in out.items()}


def _write_format1(model: Any, task: str, path: Path, hparams_fix: dict[str, Any]) -> Path:
    ckpt: dict[str, Any] = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    ckpt["attn_suite"]["format"] = 1
    ckpt["attn_suite"].pop("training", None)
    hp = {OLD_HPARAMS[task].get(k, k): v for k, v in ckpt["hyper_parameters"].items() if k not in NEW_ONLY}
    hp.update(hparams_fix)
    # None in hparams_fix: a name format 1 did not have at all
    ckpt["hyper_parameters"] = {k: v for k, v in hp.items() if not (k in hparams_fix and v is None)}
    state = ckpt["state_dict"]
    if task == "translation":
        state = {_old_translation_key(k): v for k, v in state.items()}
    elif task == "captioning":
        state = {_old_captioning_key(k): v for k, v in state.items()}
    else:
        state = _old_speech_state(state)
    ckpt["state_dict"] = state
    torch.save(ckpt, path)
    return path


def _translation(arch: str, attention: str) -> Any:
    from core.text.tokenizers import CharTokenizer
    from tasks.translation.module import TranslationModule

    torch.manual_seed(0)
    kw: dict[str, Any] = {
        "arch": arch,
        "embed_dim": 8,
        "hidden_dim": 8,
        "attention": attention,
        "num_heads": 2,
        "ffn_dim": 16,
        "encoder_layers": 2,
        "decoder_layers": 2,
    }
    if attention == "multihead":
        kw["attention_options"] = {"num_heads": 2}
    m = TranslationModule(**kw)
    m.set_tokenizers(CharTokenizer.train(["i love you"]), CharTokenizer.train(["te quiero"]))
    m.build_model()
    return m.eval()


@pytest.mark.parametrize(
    "arch, attention",
    [("rnn", "additive"), ("rnn", "location"), ("rnn", "dot"), ("rnn", "multihead"), ("transformer", "multihead")],
)
def test_translation_format1(arch: str, attention: str, tmp_path: Path) -> None:
    from tasks.translation.module import TranslationModule

    model = _translation(arch, attention)
    path = _write_format1(model, "translation", tmp_path / "old.ckpt", {})
    assert any(k.startswith("model.cells.") for k in torch.load(path)["state_dict"]) == (arch == "rnn")
    again = TranslationModule.load_from_checkpoint(path)
    assert again.hparams.embed_dim == 8 and again.hparams.decoder_layers == 2
    assert run_once("translation", again) == run_once("translation", model)


@pytest.mark.parametrize("decoder, attention", [("rnn", "additive"), ("rnn", "multihead"), ("transformer", "additive")])
def test_captioning_format1(decoder: str, attention: str, tmp_path: Path) -> None:
    from tasks.captioning.data import CaptionDataModule
    from tasks.captioning.module import CaptioningModule

    torch.manual_seed(0)
    opts = {"num_heads": 2} if attention == "multihead" else {"hidden_dim": 12}
    model = CaptioningModule(
        vocab=CaptionDataModule().vocab,
        encoder_dim=16,
        decoder=decoder,
        attention=attention,
        attention_options=opts,
        embed_dim=8,
        hidden_dim=16,
        decoder_layers=1 if decoder == "rnn" else 2,
        num_heads=2,
        ffn_dim=32,
        max_len=4,
        image_size=32,
    ).eval()
    old = {
        "decoder": "lstm" if decoder == "rnn" else "transformer",
        "attention_options": None,
        "attention_dim": opts.get("hidden_dim", 256),
        "d_model": 16,
        "num_layers": 2,
        "num_heads": opts.get("num_heads", 2),
        "rnn_type": None,
        "decoder_layers": None,
        "hidden_dim": 16,
    }
    path = _write_format1(model, "captioning", tmp_path / "old.ckpt", old)
    again = CaptioningModule.load_from_checkpoint(path)
    assert again.hparams.decoder == decoder
    assert run_once("captioning", again) == run_once("captioning", model)


@pytest.mark.parametrize(
    "encoder, attention", [("lstm", "location"), ("transformer", "additive"), ("conformer", "multihead")]
)
def test_speech_format1(encoder: str, attention: str, tmp_path: Path) -> None:
    from tasks.speech.module import SpeechModule

    torch.manual_seed(0)
    opts = {"num_heads": 2} if attention == "multihead" else {"hidden_dim": 8}
    model = SpeechModule(
        encoder=encoder,
        encoder_dim=16,
        encoder_layers=2,
        num_heads=2,
        hidden_dim=16,
        embed_dim=8,
        attention=attention,
        attention_options=opts,
        beam_size=2,
        max_chunk_seconds=4.0,
    ).eval()
    path = _write_format1(model, "speech", tmp_path / "old.ckpt", {})
    if encoder != "lstm":
        assert any("in_proj_weight" in k for k in torch.load(path)["state_dict"])
    again = SpeechModule.load_from_checkpoint(path)
    assert again.hparams.encoder_dim == 16
    assert run_once("speech", again) == run_once("speech", model)
