"""``attn-caption``: train / evaluate with LightningCLI, caption images from a checkpoint or model folder, export.

Usage::

    attn-caption fit -c configs/captioning/default.yaml            # train on generated scenes
    attn-caption test -c configs/captioning/default.yaml --ckpt_path runs/captioning/default/checkpoints/last.ckpt
    attn-caption fit -c configs/captioning/default.yaml --ckpt_path last   # resume after a crash
    attn-caption caption --ckpt model.ckpt img1.jpg img2.png [--beam 5] [--nbest 3] [--plot DIR]
    attn-caption export --ckpt model.ckpt --out my-model [--push ORG/NAME]
    attn-caption export --ckpt model.ckpt --out my-model-onnx --format onnx [--quantize int8]
    attn-caption caption --ckpt my-model-onnx img1.jpg                    # runs on ONNX Runtime

``caption`` prints ``<image path><TAB><caption>`` per image on stdout, batch by batch (images are read
one batch at a time, so memory does not grow with the number of images). An image that cannot be read
gets ``error: <path>: <why>`` on stderr, the others are still captioned, and the exit status is 1 when
any image failed (2 for a usage error or an unusable checkpoint). It loads the model with the lean
``Captioner.from_pretrained`` and imports no Lightning (``LightningCLI`` only for the training subcommands).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.cli.infer import InferenceSpec, InputItem, Output, run_inference
from core.cli.run import run_cli
from tasks.captioning.inference import Captioner

if TYPE_CHECKING:
    from core.cli.task import TaskCLI

__all__ = ["caption_cli_class", "main", "make_cli"]


@cache
def caption_cli_class() -> type[TaskCLI]:
    """``CaptionCLI``, the captioning ``LightningCLI``: built on first use, so that ``caption`` imports no
    Lightning."""
    from core.cli.task import TaskCLI

    class CaptionCLI(TaskCLI):
        """The vocabulary is built from the training captions when the data module exists, so it is linked at
        instantiation; image geometry is linked at parse time."""

        def link_task_arguments(self, parser: Any) -> None:
            parser.link_arguments("data.vocab", "model.vocab", apply_on="instantiate")
            parser.link_arguments("data.image_size", "model.image_size")
            parser.link_arguments("data.mean", "model.mean")
            parser.link_arguments("data.std", "model.std")

        def before_instantiate_classes(self) -> None:
            """``--model.encoder hf:...``: images are sized and normalised as the backbone's image processor does
            (read from its folder, or from the checkpoint of ``--ckpt_path``), for the data and the model."""
            from core.io.pretrained import is_hf_spec
            from tasks.captioning.hf_encoder import vision_settings

            cfg = self.config[self.subcommand] if self.subcommand else self.config
            encoder = cfg.get("model.encoder")
            if not is_hf_spec(encoder):
                return
            stored = cfg.get("model.pretrained_config")
            settings = stored.get("processor") if isinstance(stored, dict) else None
            settings = settings if isinstance(settings, dict) else vision_settings(encoder)
            for part in ("data", "model"):
                cfg[f"{part}.image_size"] = int(settings["image_size"])
                cfg[f"{part}.mean"] = tuple(settings["mean"])
                cfg[f"{part}.std"] = tuple(settings["std"])

    return CaptionCLI


def make_cli(argv: Sequence[str], run: bool = True) -> Any:
    """Build the captioning ``LightningCLI`` (benchmarks and tests; ``run=False`` only instantiates).

    Returns:
        The CLI instance (``.trainer``, ``.model``, ``.datamodule``).
    """
    from tasks.captioning.data import CaptionDataModule
    from tasks.captioning.module import CaptioningModule

    return caption_cli_class()(
        CaptioningModule, CaptionDataModule, args=list(argv), run=run, save_config_kwargs={"overwrite": True}
    )


def _load(path: str) -> tuple[str, Any]:
    from tasks.captioning.images import load_rgb

    return path, load_rgb(path)


def _inputs(args: argparse.Namespace) -> Iterator[InputItem]:
    for i, path in enumerate(args.images):
        yield InputItem(i, path, partial(_load, path))


def _decode(model: Any, loaded: list[tuple[str, Any]], args: argparse.Namespace) -> list[Output]:
    from tasks.captioning.inference import save_attention_figure

    results = model.caption_images(
        [im for _, im in loaded], beam=args.beam, nbest=args.nbest, batch_size=args.batch_size
    )
    size = int(model.image_size)
    outputs = []
    for (name, image), hyps in zip(loaded, results):
        rows: list[tuple[str, ...]]
        if args.nbest == 1:
            rows = [(name, hyps[0].text)]
        else:
            rows = [(name, f"{h.score:.4f}", h.text) for h in hyps]

        def plot(stem: Path, best: Any = hyps[0], image: Any = image) -> list[Path]:
            if best.attention is None or not best.words:
                return []
            return [save_attention_figure(image, best.text, best.attention, stem.with_suffix(".png"), size)]

        outputs.append(Output(rows, plot))
    return outputs


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files (jpg, png, ...)")


def _spec() -> InferenceSpec:
    return InferenceSpec(
        prog="attn-caption caption",
        description="Caption images with a trained checkpoint or model folder ('<image><TAB><caption>' per image; "
        "with --nbest K > 1, K lines '<image><TAB><score><TAB><caption>').",
        module_cls=None,  # loaded by the lean Captioner: captioning imports no Lightning
        add_arguments=_add_arguments,
        inputs=_inputs,
        decode=_decode,
        batch_size=16,
        load=Captioner.from_pretrained,
    )


def _folder(args: argparse.Namespace) -> int:
    """``export --format folder``: the PyTorch model folder, written by the Lightning module."""
    from core.cli.task import model_folder_export
    from tasks.captioning.module import CaptioningModule

    return model_folder_export(CaptioningModule, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``attn-caption``: 0 ok, 1 some images could not be captioned, 2 user error."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["caption"]:  # inference imports no Lightning (about a second instead of four)
        return run_cli(lambda a: run_inference(_spec(), list(a or [])[1:]), args)
    if args[:1] == ["export"]:  # an engine export is read and written without Lightning too
        from core.cli.export import export_command
        from tasks.captioning.export import ENGINE_EXPORTS

        return run_cli(
            lambda a: export_command("attn-caption export", list(a or [])[1:], ENGINE_EXPORTS, _folder), args
        )
    from core.cli.task import task_main
    from tasks.captioning.data import CaptionDataModule
    from tasks.captioning.module import CaptioningModule

    return task_main(args, CaptioningModule, CaptionDataModule, _spec(), cli_class=caption_cli_class())


if __name__ == "__main__":
    raise SystemExit(main())
