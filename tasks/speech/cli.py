"""`attn-asr`: train/evaluate with LightningCLI, transcribe audio files from a checkpoint.

Usage::

    attn-asr fit --config configs/speech/default.yaml
    attn-asr fit --config configs/speech/default.yaml --ckpt_path last          # resume
    attn-asr test --config configs/speech/default.yaml --ckpt_path PATH
    attn-asr transcribe --ckpt PATH a.wav b.flac [--beam N] [--plot DIR]

`transcribe` prints one line per file, `<file><TAB><transcript>`; a file that cannot be read gets
an `error: <file>: <reason>` line on stderr, the other files are still transcribed, and the exit
status is 1 when any file failed. User mistakes (missing/corrupt/foreign checkpoint, bad data or
option) print `error: ...` and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from core.cli import parse_device, run_cli
from core.distributed import gather_objects
from core.errors import ConfigError, UserError

__all__ = ["main", "transcribe_main"]


def _speech_cli_class() -> type:
    """LightningCLI subclass whose `predict` prints `<id><TAB><hypothesis>` lines (rank 0)."""
    from lightning.pytorch.callbacks import BasePredictionWriter

    from core.task_cli import TaskCLI

    class _Printer(BasePredictionWriter):
        """Collects every rank's `(id, hypothesis)` rows; rank 0 prints each utterance once, sorted by id."""

        def __init__(self) -> None:
            super().__init__(write_interval="batch")
            self._rows: list[tuple[str, str]] = []

        def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any,
                               batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            self._rows.extend((str(row["id"]), str(row["hyp"])) for row in prediction or [])

        def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            super().on_predict_epoch_end(trainer, pl_module)
            rows = dict(gather_objects(self._rows))  # a collective: every rank; DDP padding repeats collapse
            self._rows = []
            if trainer.is_global_zero:
                for utt_id in sorted(rows):
                    print(f"{utt_id}\t{rows[utt_id]}", flush=True)

    class SpeechCLI(TaskCLI):
        def before_fit(self) -> None:
            pass  # trainer_defaults below add the callbacks to every config

        def before_predict(self) -> None:
            if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
                self.trainer.callbacks.append(_Printer())

    return SpeechCLI


ROLLING_CHECKPOINT_STEPS = 100  # mid-epoch last.ckpt interval (a killed run loses at most this many steps)


def _lightning_main(argv: Sequence[str]) -> int:
    from core.training import NonFiniteLossGuard, RunCheckpoint
    from tasks.speech.data import SpeechDataModule
    from tasks.speech.module import SpeechModule

    _speech_cli_class()(
        SpeechModule,
        SpeechDataModule,
        args=list(argv),
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            # LightningCLI appends these to any `trainer.callbacks` a config lists, so every config gets them.
            # Both write <default_root_dir>/checkpoints/last.ckpt (what `fit --ckpt_path last` resumes from):
            # at each validation (plus best.ckpt by validation CER) and every ROLLING_CHECKPOINT_STEPS
            # steps in the middle of an epoch.
            "callbacks": [
                RunCheckpoint(monitor="val/cer", mode="min", save_last=True, filename="best"),
                RunCheckpoint(every_n_train_steps=ROLLING_CHECKPOINT_STEPS, save_top_k=0, save_last=True),
                NonFiniteLossGuard("skip"),
            ],
        },
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attn-asr transcribe",
                                description="Transcribe audio files with a trained checkpoint (one line per file).")
    p.add_argument("files", nargs="+", help="audio files (WAV/FLAC/OGG, any rate/channels; MP3 if libsndfile can)")
    p.add_argument("--ckpt", required=True, help="checkpoint path or http(s) URL")
    p.add_argument("--beam", type=int, default=5, help="beam size (1 = greedy), default 5")
    p.add_argument("--plot", metavar="DIR", default=None, help="save a spectrogram + attention PNG per file/chunk")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    return p


def transcribe_main(argv: Sequence[str]) -> int:
    """The `transcribe` subcommand; returns 0, or 1 when some files failed."""
    args = _parser().parse_args(list(argv))
    if args.beam < 1:
        raise ConfigError(f"--beam must be >= 1, got {args.beam}")
    from tasks.speech.module import SpeechModule

    model = SpeechModule.load_from_checkpoint(args.ckpt, map_location=parse_device(args.device))
    plot_dir = Path(args.plot) if args.plot else None
    if plot_dir is not None:
        plot_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for f in args.files:
        try:
            (res,) = model.transcribe([f], beam=args.beam, return_attention=plot_dir is not None)
        except UserError as e:  # unreadable/corrupt/empty/missing file: report it, keep going
            print(f"error: {e}", file=sys.stderr, flush=True)
            failed += 1
            continue
        text = res if isinstance(res, str) else res.text
        print(f"{f}\t{text}", flush=True)
        if plot_dir is not None and not isinstance(res, str):
            from core.viz import plot_spectrogram_alignment

            for k, ch in enumerate(res.chunks):
                weights, tokens = ch.weights, ch.tokens
                if weights.shape[0] == 0:  # nothing decoded: still show the spectrogram, one empty row
                    weights, tokens = weights.new_zeros(1, weights.shape[1]), ["(empty)"]
                suffix = f"_chunk{k}" if len(res.chunks) > 1 else ""
                fig = plot_spectrogram_alignment(ch.spec, weights, tokens,
                                                 path=plot_dir / f"{Path(f).stem}{suffix}.png", title=text)
                import matplotlib.pyplot as plt

                plt.close(fig)
    return 1 if failed else 0


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "transcribe":
        return transcribe_main(args[1:])
    return _lightning_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `attn-asr` (see module docstring). Returns the exit status."""
    return run_cli(_main, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
