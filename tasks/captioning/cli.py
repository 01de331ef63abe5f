"""``attn-caption``: train / evaluate with LightningCLI, caption images from a checkpoint.

Usage::

    attn-caption fit -c configs/captioning/default.yaml            # train on generated scenes
    attn-caption test -c configs/captioning/default.yaml --ckpt_path runs/captioning/default/checkpoints/last.ckpt
    attn-caption fit -c configs/captioning/default.yaml --ckpt_path last   # resume after a crash
    attn-caption caption --ckpt model.ckpt img1.jpg img2.png [--beam 5] [--plot DIR]

``caption`` prints ``<image path><TAB><caption>`` per image on stdout. An image that cannot be
read gets ``error: <path>: <why>`` on stderr, the others are still captioned, and the exit
status is 1 when any image failed (2 for a usage error or an unusable checkpoint).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.cli import parse_device, run_cli, user_errors
from core.errors import UserError

PARTIAL_FAILURE_EXIT_CODE = 1  # some images failed; 2 (core.cli) means nothing could be done


def make_cli(argv: Sequence[str], run: bool = True) -> Any:
    """Build the captioning ``LightningCLI`` (vocab and preprocessing linked data -> model).

    Args:
        argv: LightningCLI arguments (with a subcommand when ``run``; without one otherwise).
        run: run the subcommand; False only instantiates trainer/model/data (benchmarks, tests).

    Returns:
        The ``LightningCLI`` instance (``.trainer``, ``.model``, ``.datamodule``).
    """
    from core.task_cli import TaskCLI
    from tasks.captioning.data import CaptionDataModule
    from tasks.captioning.module import CaptioningModule

    class CaptionCLI(TaskCLI):
        def link_task_arguments(self, parser: Any) -> None:
            # The vocabulary is built from the training captions when the data module exists,
            # so it is linked at instantiation; image geometry is linked at parse time.
            parser.link_arguments("data.vocab", "model.vocab", apply_on="instantiate")
            parser.link_arguments("data.image_size", "model.image_size")
            parser.link_arguments("data.mean", "model.mean")
            parser.link_arguments("data.std", "model.std")

        def before_predict(self) -> None:
            from lightning.pytorch.callbacks import BasePredictionWriter

            from tasks.captioning.callbacks import CaptionWriter

            if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
                self.trainer.callbacks.append(CaptionWriter(self.config[self.subcommand].get("predict_output")))

    return CaptionCLI(CaptioningModule, CaptionDataModule, args=list(argv), run=run, save_config_kwargs={"overwrite": True})


def _lightning_cli(argv: Sequence[str]) -> int:
    """fit / validate / test / predict through LightningCLI; user errors become ``error: ...``, exit 2."""
    with user_errors():
        make_cli(argv)
    return 0


def _caption(args: argparse.Namespace) -> int:
    """The ``caption`` subcommand."""
    from tasks.captioning.images import load_rgb
    from tasks.captioning.module import CaptioningModule, save_attention_figure

    if args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    model = CaptioningModule.load_from_checkpoint(args.ckpt, map_location=parse_device(args.device))
    failed = 0
    loaded: list[tuple[str, Any]] = []
    for name in args.images:
        try:
            loaded.append((name, load_rgb(name)))
        except UserError as err:  # one bad file must not stop the others
            failed += 1
            print(f"error: {err}", file=sys.stderr, flush=True)
    if loaded:
        results = model.caption([im for _, im in loaded], beam=args.beam, return_attention=bool(args.plot))
        for (name, image), res in zip(loaded, results):
            text, weights = (res if isinstance(res, tuple) else (res, None))
            print(f"{name}\t{text}", flush=True)
            if args.plot and weights is not None and text:
                out = Path(args.plot) / f"{Path(name).stem}_attention.png"
                save_attention_figure(image, text, weights, out, int(model.hparams.image_size))
                print(f"saved attention figure {out}", file=sys.stderr)
    return PARTIAL_FAILURE_EXIT_CODE if failed else 0


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "caption":
        parser = argparse.ArgumentParser(prog="attn-caption caption", description="Caption images with a trained checkpoint.")
        parser.add_argument("--ckpt", required=True, help="checkpoint file or http(s) URL")
        parser.add_argument("images", nargs="+", help="image files (jpg, png, ...)")
        parser.add_argument("--beam", type=int, default=5, help="beam width (1 = greedy); default 5")
        parser.add_argument("--plot", metavar="DIR", default=None, help="save per-word attention overlays as DIR/<image>_attention.png")
        parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda; default cpu")
        return _caption(parser.parse_args(argv[1:]))
    return _lightning_cli(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``attn-caption`` (also callable from tests with an argv list).

    Args:
        argv: arguments without the program name (None = ``sys.argv[1:]``).

    Returns:
        Exit status: 0 ok, 1 some images could not be captioned, 2 user error (message on stderr).
    """
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
