"""The inference subcommand of every task CLI (``translate`` / ``caption`` / ``transcribe``).

Options common to all tasks are defined here once: ``--ckpt`` (a ``.ckpt`` file, an http(s) URL, a model
folder or ``hf://ORG/NAME[@REV]``), ``--beam``, ``--nbest``, ``--plot DIR``, ``--device``, ``--batch-size``,
``--sha256``. A task supplies an :class:`InferenceSpec`: how to list its inputs, how to decode a batch of
them, how an output prints and draws.

The promise is per-input errors: an input that cannot be read or decoded gets ``error: <input>: <why>``
on stderr, the other inputs are still processed and printed (streamed batch by batch), and the exit status
is 1 when any input failed. Mistakes that stop everything before any input is processed (an unusable
checkpoint, a bad option, a ``--plot`` folder that cannot be written) exit with status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.cli.output import format_line
from core.errors import ConfigError, UserError
from core.io.checks import check_sha256_arg
from core.io.hparams import BEAM

__all__ = [
    "PARTIAL_FAILURE_EXIT_CODE",
    "InferenceSpec",
    "InputItem",
    "Output",
    "check_plot_dir",
    "run_inference",
    "slug",
]

PARTIAL_FAILURE_EXIT_CODE = 1  # some inputs failed; 2 (core.cli.run) means nothing could be done


@dataclass
class InputItem:
    """One input of an inference run.

    Attributes:
        index: position among the inputs (0-based).
        name: how messages and output lines name it (a path, or ``stdin line 3``).
        load: reads it; raises ``UserError`` for a bad input (missing, unreadable, not UTF-8, ...).
    """

    index: int
    name: str
    load: Callable[[], Any]


@dataclass
class Output:
    """What one input produced.

    Attributes:
        rows: output lines as field tuples (joined with tabs, each field escaped).
        plot: writes this input's figure(s) given a path stem (``DIR/0003_name``); returns the files.
        notes: warnings about this output (e.g. words the model never saw), printed to stderr as
            ``warning: <input name>: <note>``; the output is still printed.
    """

    rows: list[tuple[str, ...]]
    plot: Callable[[Path], list[Path]] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class InferenceSpec:
    """What a task supplies to :func:`run_inference`.

    Attributes:
        prog: e.g. ``"attn-translate translate"``.
        description: the ``--help`` text.
        module_cls: the task's module class (``load_from_checkpoint`` / ``from_pretrained``).
        add_arguments: adds the task's positional inputs and own options.
        inputs: lists the inputs from the parsed arguments (lazily: nothing is read yet).
        decode: ``(model, loaded inputs, args) -> one Output per input``; may raise ``UserError`` for a bad
            input (the batch is then retried one input at a time, so only that input fails).
        failed_rows: rows printed for an input that failed (translation prints an empty line so output
            line i stays the translation of input line i); default none.
        batch_size: default ``--batch-size``.
        load: ``(path, map_location=, sha256=, threads=) -> model`` when the task has a loader that needs no
            Lightning (a lean inference object: translation's ``Translator.from_pretrained``; ``threads`` are an
            engine export's); None: ``module_cls`` through ``core.io.model_folder.load_task_model``.
        check: ``(model, args)``, called once the model is loaded: raises ``UserError`` for options this model
            cannot serve (translation: ``--heads`` on an engine export), before any input is read.
    """

    prog: str
    description: str
    module_cls: Any
    add_arguments: Callable[[argparse.ArgumentParser], None]
    inputs: Callable[[argparse.Namespace], Iterable[InputItem]]
    decode: Callable[[Any, list[Any], argparse.Namespace], list[Output]]
    failed_rows: Callable[[InputItem, argparse.Namespace], list[tuple[str, ...]]] = field(default=lambda item, args: [])
    batch_size: int = 16
    load: Callable[..., Any] | None = None
    check: Callable[[Any, argparse.Namespace], None] | None = None


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe short form of ``text`` (letters, digits, ``._-``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "input"
    return s[:limit]


def check_plot_dir(path: str | None) -> Path | None:
    """The ``--plot`` folder, created and proven writable, or a ``ConfigError`` before any work is done."""
    if path is None:
        return None
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--plot {path}: exists and is not a folder; give a folder for the figures")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ConfigError(f"--plot {path}: cannot write figures there ({err.strerror or err})") from None
    return folder


def _parser(spec: InferenceSpec) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=spec.prog, description=spec.description)
    spec.add_arguments(p)
    p.add_argument(
        "--ckpt",
        required=True,
        help="a .ckpt file, an http(s) URL, a model folder (export) or hf://ORG/NAME[@REVISION]",
    )
    p.add_argument("--beam", type=int, default=5, help=f"beam size (1 = greedy, at most {BEAM[1]}); default 5")
    p.add_argument(
        "--nbest",
        type=int,
        default=1,
        help="hypotheses per input (<= --beam); with K > 1 each prints as its own line with its score",
    )
    p.add_argument("--plot", metavar="DIR", default=None, help="write one attention figure (PNG) per input into DIR")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, mps); default cpu")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads of PyTorch or of an engine export (CTranslate2, ONNX Runtime); default: its own choice "
        "(one per core, up to 4 for CTranslate2)",
    )
    p.add_argument(
        "--batch-size", type=int, default=spec.batch_size, help=f"inputs decoded together; default {spec.batch_size}"
    )
    p.add_argument(
        "--sha256",
        default=None,
        help="expected SHA-256 of the checkpoint file, or of a model folder's "
        "model.safetensors (full, or a prefix of at least 8 hex digits)",
    )
    return p


def _check_options(args: argparse.Namespace) -> None:
    if not BEAM[0] <= args.beam <= BEAM[1]:
        raise ConfigError(f"--beam must be between {BEAM[0]} and {BEAM[1]}, got {args.beam}")
    if not 1 <= args.nbest <= args.beam:
        raise ConfigError(f"--nbest must be between 1 and --beam ({args.beam}), got {args.nbest}")
    if not 1 <= args.batch_size <= 4096:
        raise ConfigError(f"--batch-size must be between 1 and 4096, got {args.batch_size}")
    if args.threads is not None and not 1 <= args.threads <= 1024:
        raise ConfigError(f"--threads must be between 1 and 1024, got {args.threads}")
    args.sha256 = check_sha256_arg(args.sha256)


def _batches(items: Iterable[InputItem], size: int) -> Iterator[list[InputItem]]:
    batch: list[InputItem] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _report(item: InputItem, err: Exception) -> None:
    msg = str(err)
    # Name the input unless the message already starts with it.
    text = msg if msg.startswith(item.name) else f"{item.name}: {msg}"
    print(f"error: {format_line([text])}", file=sys.stderr, flush=True)


def _decode_each(
    spec: InferenceSpec, model: Any, batch: list[tuple[InputItem, Any]], args: argparse.Namespace
) -> list[Output | Exception]:
    """Decode a batch; when a bad input makes the batch fail, decode one by one so only it fails."""
    try:
        return list(spec.decode(model, [x for _, x in batch], args))
    except UserError as err:
        if len(batch) == 1:
            return [err]
    out: list[Output | Exception] = []
    for pair in batch:
        try:
            out.extend(spec.decode(model, [pair[1]], args))
        except UserError as err:
            out.append(err)
    return out


def run_inference(spec: InferenceSpec, argv: Sequence[str]) -> int:
    """Parse ``argv``, load the model, process every input; returns the exit status (0, 1 or 2 via UserError)."""
    from core.cli.run import parse_device

    args = _parser(spec).parse_args(list(argv))
    _check_options(args)
    plot_dir = check_plot_dir(args.plot)
    device = parse_device(args.device)
    if spec.load is not None:
        model = spec.load(args.ckpt, map_location=device, sha256=args.sha256, threads=args.threads)
    else:  # a task without a lean loader: its module through the checkpoint / model folder reader (PyTorch)
        from core.io.model_folder import load_task_model

        model = load_task_model(spec.module_cls, args.ckpt, map_location=device, sha256=args.sha256)
    if args.threads is not None and getattr(model, "engine", "pytorch") == "pytorch":
        import torch  # an engine's threads were set by its loader; PyTorch's are the process's

        torch.set_num_threads(args.threads)
    if spec.check is not None:
        spec.check(model, args)
    failed = 0
    for batch in _batches(spec.inputs(args), args.batch_size):
        # Rows are printed in input order once the batch is done: a failed input's placeholder row stays in
        # its place (translation keeps output line i for input line i).
        outcome: dict[int, Output | Exception] = {}
        loaded: list[tuple[InputItem, Any]] = []
        for item in batch:
            try:
                loaded.append((item, item.load()))
            except UserError as err:  # one bad input never stops the others
                outcome[item.index] = err
        if loaded:
            outcome.update((item.index, res) for (item, _), res in zip(loaded, _decode_each(spec, model, loaded, args)))
        for item in batch:
            res = outcome[item.index]
            if isinstance(res, Exception):
                _report(item, res)
                failed += 1
                _print_rows(spec.failed_rows(item, args))
                continue
            for note in res.notes:
                print(f"warning: {format_line([f'{item.name}: {note}'])}", file=sys.stderr, flush=True)
            _print_rows(res.rows)
            if plot_dir is not None and res.plot is not None:
                try:
                    # input position first (unique: two inputs with the same base name never share a figure)
                    stem = f"{item.index:04d}_{slug(Path(item.name).stem or item.name)}"
                    for path in res.plot(plot_dir / stem):
                        print(f"saved {path}", file=sys.stderr)
                except (UserError, OSError, ValueError) as err:
                    _report(item, UserError(f"could not write its figure: {err}"))
                    failed += 1
    return PARTIAL_FAILURE_EXIT_CODE if failed else 0


def _print_rows(rows: Iterable[tuple[str, ...]]) -> None:
    for row in rows:
        print(format_line(row))
    sys.stdout.flush()
