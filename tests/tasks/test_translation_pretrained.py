"""Translation with a pretrained MarianMT (``--model.arch marian --model.pretrained ...``): a 2-layer Marian with a real
SentencePiece tokenizer built here; incremental decoding against teacher forcing and ``generate``, fit / resume
through the CLI, offline checkpoints, per-head plots, model folders with the tokenizer files, bad input."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("sentencepiece")

from core.decoding.beam import beam_search
from core.errors import CheckpointError, ConfigError
from core.text.tokenizers import BOS_ID, EOS_ID, PAD_ID
from tasks.translation import grammar
from tasks.translation.batching import pad_ids
from tasks.translation.cli import main
from tasks.translation.module import TranslationModule

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_tiny import marian_folder, speech_folder

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "translation"
PAIRS = grammar.generate_corpus(400, seed=0)
SENTENCES = ["the dog sees the cat", "I love you", "we eat bread"]


@pytest.fixture(scope="module")
def marian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return marian_folder(
        tmp_path_factory.mktemp("hf_marian") / "opus-mt-tiny", ([a for a, _ in PAIRS], [b for _, b in PAIRS])
    )


@pytest.fixture(scope="module")
def model(marian: Path) -> TranslationModule:
    torch.manual_seed(0)
    return TranslationModule(arch="marian", pretrained=str(marian), beam_size=3, plot_examples=0).eval()


def _batch(m: TranslationModule, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_ids([m.src_tokenizer.encode(t) for t in texts])  # (B, S), (B,)


def test_tokenizer_ids_are_marian_ids_plus_two(model: TranslationModule, marian: Path) -> None:
    from transformers import MarianTokenizer

    hf = MarianTokenizer.from_pretrained(marian)
    text = "the red car"
    assert model.src_tokenizer.encode(text) == [i + 2 for i in hf(text)["input_ids"][:-1]]  # without its </s>
    assert model.tgt_tokenizer.decode(model.tgt_tokenizer.encode("el coche rojo")) == "el coche rojo"
    assert model.src_tokenizer.vocab_size == model.model.vocab_size == hf.vocab_size + 2


def test_incremental_steps_match_teacher_forcing(model: TranslationModule) -> None:
    src, lengths = _batch(model, SENTENCES[:2])
    tgt_in = torch.tensor([[BOS_ID, 5, 9, 12, 7], [BOS_ID, 8, 8, 30, 4]])  # (B, T)
    with torch.no_grad():
        logits, attn = model.model(src, lengths, tgt_in, need_weights=True)  # (B, T, V), (B, T, S + 1)
        full = torch.log_softmax(logits.float(), -1)
        state = model.model.init_state(src, lengths)
        for t in range(tgt_in.shape[1]):
            lp, state, w = model.model.step(tgt_in[:, t], state, need_weights=True)
            keep = torch.ones(lp.shape[1], dtype=torch.bool)
            keep[model.model.m_pad + 2] = False  # Marian's own pad is suppressed in steps
            assert torch.allclose(lp[:, keep], full[:, t, keep], atol=1e-5)
            assert torch.allclose(w, attn[:, t], atol=1e-5)


def test_beam_scores_and_greedy_agree_with_teacher_forcing_and_generate(model: TranslationModule) -> None:
    src, lengths = _batch(model, SENTENCES)
    net = model.model
    res = beam_search(
        lambda last, st: net.step(last, st),
        net.init_state(src, lengths),
        batch_size=3,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        max_len=8,
        beam_size=3,
        nbest=3,
        length_penalty=1.0,
        suppress=(PAD_ID, BOS_ID),
    )
    for b in range(3):
        for toks, score in zip(res.tokens[b], res.scores[b]):
            ended = len(toks) < 8
            tgt = [BOS_ID, *toks]
            with torch.no_grad():
                logits, _ = net(src[b : b + 1, : int(lengths[b])], lengths[b : b + 1], torch.tensor([tgt]))
            lp = torch.log_softmax(logits[0].float(), -1)
            outs = toks + ([EOS_ID] if ended else [])
            total = sum(float(lp[i, t]) for i, t in enumerate(outs))
            assert total / len(outs) == pytest.approx(score, abs=1e-4)  # the KV cache followed the beams
    greedy = beam_search(
        lambda last, st: net.step(last, st),
        net.init_state(src, lengths),
        batch_size=3,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        max_len=8,
        beam_size=1,
        suppress=(PAD_ID, BOS_ID),
    )
    ids, mask = net._source(src, lengths)
    with torch.no_grad():
        gen = net.marian.generate(
            input_ids=ids,
            attention_mask=mask.long(),
            num_beams=1,
            do_sample=False,
            max_new_tokens=8,
            bad_words_ids=[[net.m_pad]],
            forced_eos_token_id=None,
        )
    for b in range(3):
        ours = [t - 2 for t in greedy.tokens[b][0]]
        theirs = [t for t in gen[b, 1:].tolist() if t != net.m_pad]
        assert theirs[: len(ours)] == ours  # the same greedy path as transformers' own decoding


@pytest.fixture(scope="module")
def tsv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tsv") / "pairs.tsv"
    path.write_text("en\tes\n" + "\n".join(f"{a}\t{b}" for a, b in PAIRS) + "\n", encoding="utf-8")
    return path


def _fit_args(tmp: Path, tsv: Path, pretrained: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIGS / "default.yaml"),
        "--config",
        str(CONFIGS / "tiny.yaml"),
        "--data.cache_dir",
        str(tmp / "cache"),
        "--data.source=tsv",
        f"--data.path={tsv}",
        "--data.val_size=16",
        "--data.test_size=16",
        "--model.arch=marian",
        f"--model.pretrained={pretrained}",
        "--model.lr=1e-3",
        f"--trainer.default_root_dir={tmp / 'run'}",
        "--trainer.max_epochs=4",
        "--trainer.limit_train_batches=2",
        *extra,
    ]


def test_fit_resume_offline_checkpoint_heads_and_model_folder(
    marian: Path, tsv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub
    import transformers

    source = tmp_path / "opus"
    shutil.copytree(marian, source)
    monkeypatch.chdir(tmp_path)
    assert main(_fit_args(tmp_path, tsv, source, "--trainer.max_steps=2", "--model.trainable_blocks=1")) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    raw = torch.load(ckpt, weights_only=True, map_location="cpu")
    meta = raw["attn_suite"]
    assert meta["tokenizers"]["src"]["type"] == "marian" and meta["pretrained"]["model_type"] == "marian"
    assert set(meta["hf_tokenizer"]) == {"source.spm", "target.spm", "vocab.json", "tokenizer_config.json"}
    frozen = "model.marian.model.encoder.layers.0.fc1.weight"
    assert torch.equal(
        raw["state_dict"][frozen], TranslationModule(arch="marian", pretrained=str(marian)).state_dict()[frozen]
    )  # trainable_blocks=1: only the last decoder layer trained

    shutil.rmtree(source)  # from here on nothing may read the pretrained source or the hub

    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("tried to download or read pretrained weights")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    assert (
        main(
            _fit_args(
                tmp_path, tsv, source, "--trainer.max_steps=4", "--model.trainable_blocks=1", "--ckpt_path", "last"
            )
        )
        == 0
    )  # resumed: the network is rebuilt from the checkpoint
    assert torch.load(ckpt, weights_only=True, map_location="cpu")["global_step"] == 4

    model = TranslationModule.load_from_checkpoint(ckpt)
    hyps = model.translate(SENTENCES, beam=2, return_attention=True)
    assert all(h.attention.shape == (len(h.tgt_tokens), len(h.src_tokens)) for h in hyps)
    out = Path(model.save_pretrained(tmp_path / "exported"))
    for name in ("source.spm", "target.spm", "vocab.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (marian / name).read_bytes()  # native files, byte for byte
    again = TranslationModule.from_pretrained(out)
    assert [h.text for h in again.translate(SENTENCES, beam=2, return_attention=True)] == [h.text for h in hyps]
    capsys.readouterr()
    assert (
        main(
            ["translate", "--ckpt", str(out), "--beam", "2", "--plot", str(tmp_path / "plots"), "--heads", SENTENCES[0]]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == hyps[0].text
    names = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert names == ["0000_argument_1.png", "0000_argument_1_head1.png", "0000_argument_1_head2.png"]


def test_tampered_pretrained_config_is_refused(model: TranslationModule, tmp_path: Path) -> None:
    from tiny_models import save_checkpoint

    path = save_checkpoint(model, tmp_path / "m.ckpt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["attn_suite"]["pretrained"]["config"]["auto_map"] = {"AutoModel": "evil.Model"}
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=rf"{path}.*auto_map.*refused"):
        TranslationModule.load_from_checkpoint(path)
    ckpt["attn_suite"]["pretrained"]["config"].pop("auto_map")
    ckpt["attn_suite"]["pretrained"]["config"]["d_model"] = 64  # weights of another size
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=str(path)):
        TranslationModule.load_from_checkpoint(path)


def test_bad_marian_options_are_clear_errors(
    marian: Path, tsv: Path, tmp_path: Path, user_error: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hc

    monkeypatch.chdir(tmp_path)
    assert main(_fit_args(tmp_path, tsv, speech_folder(tmp_path / "w2v"))) == 2
    assert "holds a 'wav2vec2' model (a speech encoder); --model.pretrained expects a translation model" in user_error()
    broken = tmp_path / "no-spm"
    shutil.copytree(marian, broken)
    os.remove(broken / "target.spm")
    assert main(_fit_args(tmp_path, tsv, broken)) == 2
    assert f"target.spm is missing in {broken}" in user_error()
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert main(_fit_args(tmp_path, tsv, Path("Helsinki-NLP/opus-mt-en-es"))) == 2
    line = user_error()
    assert "'Helsinki-NLP/opus-mt-en-es' is not a local folder" in line and "local model folder" in line
    with pytest.raises(ConfigError, match="needs --model.pretrained"):
        TranslationModule(arch="marian")
    with pytest.raises(ConfigError, match="--model.pretrained is for --model.arch marian"):
        TranslationModule(arch="rnn", pretrained=str(marian))
    with pytest.raises(ConfigError, match="leaves nothing of a marian model to train"):
        TranslationModule(arch="marian", pretrained=str(marian), trainable_blocks=0)
    with pytest.raises(ConfigError, match="below the marian model's 128 positions"):
        TranslationModule(arch="marian", pretrained=str(marian), max_len=200)
