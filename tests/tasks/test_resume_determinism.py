"""Training you can trust, for captioning and speech: resume, SIGKILL, determinism, non-finite losses.

Mirrors the "resume / determinism" section of ``test_translation.py``. Everything runs on CPU with tiny
models and generated data (captioning: generated scenes; speech: a tiny eSpeak NG corpus, skipped when
the optional ``attn-suite[speech]`` extra is missing).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
CAP_CONFIGS = REPO / "configs" / "captioning"
ASR_CONFIGS = REPO / "configs" / "speech"

try:
    import espeakng_loader  # noqa: F401

    HAVE_ESPEAK = True
except ImportError:  # optional GPL extra
    HAVE_ESPEAK = False


class _LossRecorder(pl.Callback):
    """Collects the training loss of every step (as Python floats)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *args: Any) -> None:
        self.losses.append(float(outputs["loss"]))


def _assert_finite_weights(ckpt: dict[str, Any]) -> None:
    for name, t in ckpt["state_dict"].items():
        if t.is_floating_point():
            assert bool(torch.isfinite(t).all()), name


def _assert_one_step_skipped(ckpt: dict[str, Any], global_step: int) -> None:
    """The guard skipped exactly one step: its counter is 1 and AdamW applied ``global_step - 1`` updates."""
    assert ckpt["global_step"] == global_step
    guards = [v for k, v in ckpt["callbacks"].items() if "NonFiniteLossGuard" in k]
    assert guards == [{"skipped": 1}], ckpt["callbacks"].keys()
    states = ckpt["optimizer_states"][0]["state"]
    assert states and all(float(s["step"]) == global_step - 1 for s in states.values())
    _assert_finite_weights(ckpt)


def _nan_on_first_training_call(fn: Callable[..., Any], patch_loss: Callable[[Any], Any]) -> Callable[..., Any]:
    """Wrap a module's loss method so that its first call in training mode returns a NaN loss."""
    calls = {"n": 0}

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = fn(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 1:
                return patch_loss(out)
        return out

    return wrapped


def _wait_for_checkpoint_then_kill(cmd: list[str], last: Path, cwd: Path, timeout: float = 120) -> dict[str, Any]:
    """Run ``cmd``, SIGKILL it as soon as ``last`` exists, return ``torch.load(last, weights_only=True)``."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
    finally:
        proc.kill()  # SIGKILL: no chance to clean up
        _, err = proc.communicate()
    assert last.exists(), f"no checkpoint was written before the kill:\n{(err or '')[-3000:]}"
    return torch.load(last, weights_only=True)  # atomic save: never a truncated file


# =============================================================================================
# captioning
# =============================================================================================
def _cap_args(root: Path, *extra_configs: Path) -> list[str]:
    """Default + tiny overlay (+ extras), 6 batches per epoch, validation on one batch."""
    args = ["-c", str(CAP_CONFIGS / "default.yaml"), "-c", str(CAP_CONFIGS / "tiny.yaml")]
    for cfg in extra_configs:
        args += ["-c", str(cfg)]
    return [
        *args,
        f"--trainer.default_root_dir={root}",
        "--trainer.limit_train_batches=null",
        "--trainer.max_epochs=-1",
        "--data.train_size=48",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def test_captioning_cli_resume_from_last_continues_step_count(tmp_path: Path) -> None:
    from tasks.captioning.cli import main

    assert main(["fit", *_cap_args(tmp_path), "--trainer.max_steps=3"]) == 0
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3
    assert main(["fit", *_cap_args(tmp_path), "--trainer.max_steps=6", "--ckpt_path", "last"]) == 0
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 6
    assert state["lr_schedulers"][0]["last_epoch"] == 6  # scheduler state resumed too
    assert not list(tmp_path.rglob("last-v*.ckpt"))  # one last.ckpt, no stale versioned copies


@pytest.mark.slow
def test_captioning_sigkill_mid_epoch_then_resume_from_last(tmp_path: Path) -> None:
    from tasks.captioning.cli import main

    # The shipped tiny callbacks with a rolling checkpoint every 3 steps (instead of 10).
    tiny = yaml.safe_load((CAP_CONFIGS / "tiny.yaml").read_text(encoding="utf-8"))
    callbacks = tiny["trainer"]["callbacks"]
    rolling = [cb for cb in callbacks if cb["init_args"].get("every_n_train_steps")]
    assert len(rolling) == 1
    rolling[0]["init_args"]["every_n_train_steps"] = 3
    overlay = tmp_path / "every3.yaml"
    overlay.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}), encoding="utf-8")
    # 100 batches per epoch and no validation: the only checkpoints are the rolling mid-epoch ones.
    run = [*_cap_args(tmp_path, overlay), "--data.train_size=800", "--trainer.limit_val_batches=0"]
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = _wait_for_checkpoint_then_kill(
        [sys.executable, "-m", "tasks.captioning.cli", "fit", *run, "--trainer.max_steps=100000"], last, REPO
    )
    step = saved["global_step"]
    assert step >= 3 and step % 3 == 0 and step < 100  # a mid-epoch rolling save
    assert saved["attn_suite"]["task"] == "captioning"
    assert main(["fit", *run, f"--trainer.max_steps={step + 3}", "--ckpt_path", "last"]) == 0
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == step + 3  # continued from the saved step, not from 0
    assert resumed["lr_schedulers"][0]["last_epoch"] == step + 3


def test_captioning_same_seed_same_losses_and_captions() -> None:
    from tasks.captioning import scenes
    from tasks.captioning.data import CaptionDataModule
    from tasks.captioning.module import CaptioningModule

    image = scenes.make_scene(0, "test", 3, 64).image
    runs = []
    for _ in range(2):
        pl.seed_everything(0, verbose=False)
        dm = CaptionDataModule(batch_size=8, train_size=32, image_size=64, augment=True)
        dm.setup("fit")
        model = CaptioningModule(
            vocab=dm.vocab,
            encoder_dim=32,
            attention_options={"hidden_dim": 16},
            embed_dim=16,
            hidden_dim=32,
            dropout=0.2,
            max_len=10,
            warmup_steps=1,
            image_size=64,
            plot_examples=0,
        )
        rec = _LossRecorder()
        trainer = pl.Trainer(
            max_steps=4,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[rec],
        )
        trainer.fit(model, train_dataloaders=dm.train_dataloader())
        runs.append((rec.losses, model.caption([image], beam=1), model.caption([image], beam=2)))
    assert len(runs[0][0]) == 4 and all(math.isfinite(x) for x in runs[0][0])
    assert runs[0] == runs[1]


def test_captioning_shipped_configs_wire_guard_and_rolling_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from core.train.callbacks import NonFiniteLossGuard
    from tasks.captioning.cli import make_cli

    monkeypatch.chdir(tmp_path)
    # Every shipped config lists the guard and a rolling last-only checkpoint (coco/flickr need data to
    # instantiate, so their YAML is checked; the overlay's list replaces default.yaml's, so it has its own).
    for name in ("default", "tiny", "coco", "flickr8k"):
        cbs = yaml.safe_load((CAP_CONFIGS / f"{name}.yaml").read_text(encoding="utf-8"))["trainer"]["callbacks"]
        paths = [cb["class_path"] for cb in cbs]
        assert "core.train.callbacks.NonFiniteLossGuard" in paths, name
        rolling = [cb["init_args"] for cb in cbs if cb["init_args"] and cb["init_args"].get("every_n_train_steps")]
        assert len(rolling) == 1 and rolling[0]["save_top_k"] == 0 and rolling[0]["save_last"] is True, name
        dirs = {
            cb["init_args"].get("dirpath") for cb in cbs if cb["class_path"] == "core.train.callbacks.RunCheckpoint"
        }
        assert name != "tiny" or dirs == {None}, dirs  # tiny: <default_root_dir>/checkpoints
        assert len(dirs) == 1, name  # both write the same last.ckpt that `--ckpt_path last` finds
    # ... and what the CLI actually builds from them.
    for configs in (["default.yaml"], ["default.yaml", "tiny.yaml"]):
        argv = [a for c in configs for a in ("-c", str(CAP_CONFIGS / c))]
        cli = make_cli([*argv, "--trainer.logger=false"], run=False)
        guards = [cb for cb in cli.trainer.callbacks if isinstance(cb, NonFiniteLossGuard)]
        assert len(guards) == 1 and guards[0].action == "skip", configs
        rolling_cbs = [
            cb for cb in cli.trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb._every_n_train_steps > 0
        ]
        assert len(rolling_cbs) == 1 and rolling_cbs[0].save_top_k == 0 and rolling_cbs[0].save_last, configs
        if "tiny.yaml" in configs:  # the overlay must not inherit default.yaml's run folder or monitor
            assert all(
                cb.dirpath is None and cb.monitor is None
                for cb in cli.trainer.callbacks
                if isinstance(cb, ModelCheckpoint)
            )


def test_captioning_nan_loss_step_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.captioning.cli import main
    from tasks.captioning.network import CaptionNetwork

    monkeypatch.setattr(  # NaN logits: a NaN loss
        CaptionNetwork,
        "forward",
        _nan_on_first_training_call(CaptionNetwork.forward, lambda out: (out[0] * float("nan"), out[1])),
    )
    with pytest.warns(UserWarning, match="skipping optimizer step"):
        assert (
            main(
                [
                    "fit",
                    "-c",
                    str(CAP_CONFIGS / "default.yaml"),
                    "-c",
                    str(CAP_CONFIGS / "tiny.yaml"),
                    f"--trainer.default_root_dir={tmp_path}",
                    "--trainer.enable_progress_bar=false",
                ]
            )
            == 0
        )
    _assert_one_step_skipped(torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True), 2)


# =============================================================================================
# speech
# =============================================================================================
ASR_TINY = [
    "--model.encoder_dim=32",
    "--model.encoder_layers=1",
    "--model.hidden_dim=48",
    "--model.embed_dim=16",
    '--model.attention_options={"hidden_dim": 32, "conv_channels": 4, "kernel_size": 5}',
    "--model.beam_size=2",
    "--model.plot_examples=0",
    "--data.num_workers=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthesised corpus (24/6/6 utterances, ~3 s to generate)."""
    if not HAVE_ESPEAK:
        pytest.skip("espeakng-loader (attn-suite[speech]) not installed")
    from tasks.speech.synth import generate_corpus

    return generate_corpus(tmp_path_factory.mktemp("synth"), num_train=24, num_val=6, num_test=6, progress=False)


def _asr_args(corpus: Path, root: Path) -> list[str]:
    # max_frames=600: ~3 utterances per batch, so an epoch has several steps. The default logger stays on
    # (versioned log folders must not hide last.ckpt from `--ckpt_path last`).
    return [
        "--data.cache_dir",
        str(corpus.parent),
        "--data.synth_train=24",
        "--data.synth_val=6",
        "--data.synth_test=6",
        *ASR_TINY,
        "--data.max_frames=600",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_epochs=-1",
        "--trainer.limit_val_batches=1",
    ]


def test_speech_cli_resume_from_last_continues_step_count(corpus: Path, tmp_path: Path) -> None:
    from tasks.speech.cli import main

    assert main(["fit", *_asr_args(corpus, tmp_path), "--trainer.max_steps=3"]) == 0
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3
    assert main(["fit", *_asr_args(corpus, tmp_path), "--trainer.max_steps=6", "--ckpt_path", "last"]) == 0
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 6
    assert state["lr_schedulers"][0]["last_epoch"] == 6  # scheduler state resumed too
    assert [p.name for p in tmp_path.rglob("last*.ckpt")] == ["last.ckpt"]


@pytest.mark.slow
def test_speech_sigkill_mid_epoch_then_resume_from_last(corpus: Path, tmp_path: Path) -> None:
    from tasks.speech.cli import main

    # The CLI's persistent callbacks save every 100 steps; a config can add a denser rolling checkpoint.
    overlay = tmp_path / "every3.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks": [
                        {
                            "class_path": "core.train.callbacks.RunCheckpoint",
                            "init_args": {
                                "dirpath": str(tmp_path / "checkpoints"),
                                "every_n_train_steps": 3,
                                "save_top_k": 0,
                                "save_last": True,
                            },
                        }
                    ]
                }
            }
        ),
        encoding="utf-8",
    )
    run = ["--config", str(overlay), *_asr_args(corpus, tmp_path), "--trainer.limit_val_batches=0"]
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = _wait_for_checkpoint_then_kill(
        [sys.executable, "-m", "tasks.speech.cli", "fit", *run, "--trainer.max_steps=100000"], last, REPO
    )
    step = saved["global_step"]
    assert step >= 3 and step % 3 == 0
    assert saved["attn_suite"]["task"] == "speech"
    assert main(["fit", *run, f"--trainer.max_steps={step + 3}", "--ckpt_path", "last"]) == 0
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == step + 3  # continued from the saved step, not from 0
    assert resumed["lr_schedulers"][0]["last_epoch"] == step + 3


def test_speech_same_seed_same_losses_and_transcripts(corpus: Path) -> None:
    from tasks.speech.data import SpeechDataModule
    from tasks.speech.module import SpeechModule

    runs = []
    for _ in range(2):
        pl.seed_everything(0, verbose=False)
        dm = SpeechDataModule(
            cache_dir=str(corpus.parent), synth_train=24, synth_val=6, synth_test=6, num_workers=0, max_frames=600
        )
        m = SpeechModule(
            encoder_dim=32,
            encoder_layers=1,
            hidden_dim=48,
            embed_dim=16,
            lr=3e-3,
            warmup_steps=2,
            plot_examples=0,
            beam_size=2,
            attention_options={"hidden_dim": 32, "conv_channels": 4, "kernel_size": 5},
        )
        rec = _LossRecorder()
        trainer = pl.Trainer(
            max_steps=4,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[rec],
        )
        trainer.fit(m, dm)
        audio = [u.audio for u in dm.splits["train"][:2]]
        runs.append((rec.losses, m.transcribe(audio, beam=1), m.transcribe(audio, beam=2)))
    assert len(runs[0][0]) == 4 and all(math.isfinite(x) for x in runs[0][0])
    assert runs[0] == runs[1]


def test_speech_cli_wires_guard_and_rolling_checkpoint_for_every_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from core.train.callbacks import NonFiniteLossGuard
    from tasks.speech.cli import main

    built: list[pl.Trainer] = []
    monkeypatch.setattr(pl.Trainer, "fit", lambda self, *a, **k: built.append(self))  # build only
    monkeypatch.chdir(tmp_path)
    combos = [["default.yaml"], ["default.yaml", "tiny.yaml"], ["librispeech.yaml"], ["manifest.yaml"]]
    for configs in combos:
        argv = [a for c in configs for a in ("--config", str(ASR_CONFIGS / c))]
        assert main(["fit", *argv]) == 0, configs
        trainer = built[-1]
        guards = [cb for cb in trainer.callbacks if isinstance(cb, NonFiniteLossGuard)]
        assert len(guards) == 1 and guards[0].action == "skip", configs
        ckpts = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
        rolling = [cb for cb in ckpts if cb._every_n_train_steps > 0]
        assert len(rolling) == 1 and rolling[0].save_top_k == 0 and rolling[0].save_last, configs
        # Both write <default_root_dir>/checkpoints/last.ckpt, not the logger's versioned folder.
        for cb in ckpts:
            assert cb._find_last_checkpoints(trainer) == set()
            assert Path(cb.dirpath) == Path(trainer.default_root_dir).resolve() / "checkpoints", configs
    assert len(built) == len(combos)


def test_speech_nan_loss_step_is_skipped(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.speech import task as speech_task
    from tasks.speech.cli import main

    def nan_loss(out: dict[str, Any]) -> dict[str, Any]:
        return {**out, "loss": out["loss"] * float("nan")}

    # the task's loss function; its first argument is the network (in training mode when training)
    losses = _nan_on_first_training_call(speech_task.speech_losses, nan_loss)
    monkeypatch.setattr(speech_task, "speech_losses", losses)
    with pytest.warns(UserWarning, match="skipping optimizer step"):
        assert main(["fit", *_asr_args(corpus, tmp_path), "--trainer.max_steps=2", "--trainer.logger=false"]) == 0
    _assert_one_step_skipped(torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True), 2)
