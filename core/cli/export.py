"""The ``export`` subcommand of every task: a PyTorch model folder, or an export for an inference engine.

``attn-<task> export --ckpt PATH --out DIR`` writes a Hugging Face style model folder (``core.io.model_folder``).
``--format`` picks an engine a task offers instead (translation: ``ctranslate2`` for Transformers, ``onnx`` for the
rest), with ``--quantize`` for its weight type; those exports are loaded by the task's lean loader, so writing
and reading them imports no Lightning. This module imports neither: the PyTorch folder is written by the
callback a task's command line hands in (``core.cli.task``), which loads the Lightning module.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from core.errors import ConfigError

__all__ = ["FOLDER", "EngineExport", "export_command", "export_parser"]

FOLDER = "folder"  # --format of the PyTorch model folder (the default)


@dataclass(frozen=True)
class EngineExport:
    """One ``--format`` a task offers beside the model folder.

    Attributes:
        quantize: the ``--quantize`` values it takes.
        default: the value used without ``--quantize``.
        write: ``write(ckpt, out, quantize, overwrite)`` -> the folder written.
        help: one line for ``--help`` (which models it takes).
    """

    quantize: tuple[str, ...]
    default: str
    write: Callable[[str, str, str, bool], object]
    help: str


def export_parser(prog: str, engines: Mapping[str, EngineExport]) -> argparse.ArgumentParser:
    """The ``export`` arguments (``engines``: the task's ``--format`` choices beside ``folder``)."""
    formats = "".join(f" '{name}': {e.help}." for name, e in engines.items())
    p = argparse.ArgumentParser(
        prog=prog,
        description="Write a trained model as a Hugging Face style model folder "
        "(model.safetensors, config.json, tokenizer/vocabulary files, README.md model card), or as an export for "
        "an inference engine (--format).",
    )
    p.add_argument("--ckpt", required=True, help="a .ckpt file, an http(s) URL, a model folder or hf://ORG/NAME")
    p.add_argument(
        "--out",
        required=True,
        help="the model folder to write: a new or empty folder, or an earlier export (its files are replaced)",
    )
    p.add_argument(
        "--format",
        default=FOLDER,
        choices=[FOLDER, *engines],
        help=f"'folder' (default): the PyTorch model folder.{formats}",
    )
    quantize = sorted({q for e in engines.values() for q in e.quantize})
    p.add_argument(
        "--quantize",
        default=None,
        choices=quantize or None,
        help="with an engine --format: the weights' type ("
        + "; ".join(f"{n}: {', '.join(e.quantize)}, default {e.default}" for n, e in engines.items())
        + ")",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="also write into a non-empty folder that is not a model folder, adding the model's files beside "
        "what is there (nothing is ever deleted, and a file of the same name is refused)",
    )
    p.add_argument("--push", metavar="ORG/NAME", default=None, help="also upload the folder to the Hugging Face Hub")
    p.add_argument("--private", action="store_true", help="with --push: create a private repository")
    p.add_argument("--figure", default=None, help="an attention figure (PNG) to include in the model card")
    p.add_argument(
        "--metrics",
        default=None,
        help="a JSON file of {name: value} scores for the model card (default: the scores the "
        "checkpoint recorded when it was saved)",
    )
    return p


def export_command(
    prog: str,
    argv: Sequence[str],
    engines: Mapping[str, EngineExport],
    folder: Callable[[argparse.Namespace], int],
) -> int:
    """Run ``export``: ``folder(args)`` writes the PyTorch model folder; an engine format is written here.

    Raises:
        ConfigError: an option the chosen format does not take.
    """
    args = export_parser(prog, engines).parse_args(list(argv))
    if not args.out.strip():
        raise ConfigError("--out is empty: name the model folder to write")
    if args.format == FOLDER:
        if args.quantize is not None:
            raise ConfigError("--quantize applies to an engine --format (the PyTorch model folder keeps its weights)")
        return folder(args)
    engine = engines[args.format]
    for option in ("push", "figure", "metrics"):
        if getattr(args, option) is not None:
            raise ConfigError(
                f"--{option} applies to the PyTorch model folder (--format folder), not to --format {args.format}"
            )
    quantize = args.quantize or engine.default
    if quantize not in engine.quantize:
        raise ConfigError(f"--format {args.format} takes --quantize {', '.join(engine.quantize)}, got {quantize!r}")
    print(engine.write(args.ckpt, args.out, quantize, args.overwrite))
    return 0
