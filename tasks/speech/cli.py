"""`attn-asr`: train/evaluate with LightningCLI, transcribe audio from a checkpoint or model folder, export.

Usage::

    attn-asr fit --config configs/speech/default.yaml
    attn-asr fit --config configs/speech/default.yaml --ckpt_path last          # resume
    attn-asr test --config configs/speech/default.yaml --ckpt_path PATH
    attn-asr transcribe --ckpt PATH a.wav b.flac [--beam N] [--nbest K] [--plot DIR]
    attn-asr export --ckpt PATH --out my-model [--push ORG/NAME]
    attn-asr export --ckpt PATH --out my-model-onnx --format onnx [--quantize int8]
    attn-asr transcribe --ckpt my-model-onnx a.wav                       # runs on ONNX Runtime

`transcribe` prints one line per file, `<file><TAB><transcript>`; a file that cannot be read (missing,
corrupt, empty, too short) gets an `error: <file>: <reason>` line on stderr, the other files are still
transcribed, and the exit status is 1 when any file failed. Silent audio gets an empty transcript. User
mistakes (unusable checkpoint, bad option) print `error: ...` and exit with status 2, without a traceback.
`transcribe` loads the model with the lean `Transcriber.from_pretrained` and imports no Lightning (`LightningCLI`
only for the training subcommands).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from core.cli.infer import InferenceSpec, InputItem, Output, run_inference
from core.cli.run import run_cli
from tasks.speech.inference import Transcriber

__all__ = ["main"]


def _load(path: str) -> tuple[str, Any]:
    from tasks.speech.audio import load_audio

    return path, load_audio(path)


def _inputs(args: argparse.Namespace) -> Iterator[InputItem]:
    for i, path in enumerate(args.files):
        yield InputItem(i, path, partial(_load, path))


def _decode(model: Any, loaded: list[tuple[str, Any]], args: argparse.Namespace) -> list[Output]:
    from tasks.speech.audio import SAMPLE_RATE

    results = model.transcribe(
        [(wav, SAMPLE_RATE) for _, wav in loaded],
        beam=args.beam,
        nbest=args.nbest,
        return_attention=True,
        batch_size=args.batch_size,
    )
    outputs = []
    for (name, _), res in zip(loaded, results):
        rows: list[tuple[str, ...]]  # file and transcript, or file / score / transcript per line with --nbest
        if args.nbest == 1:
            rows = [(name, res.text)]
        else:
            rows = [(name, f"{score:.4f}", text) for text, score in res.nbest] or [(name, "", "")]
        outputs.append(Output(rows, partial(_plot, res)))
    return outputs


def _plot(res: Any, stem: Path) -> list[Path]:
    from core.viz import plot_spectrogram_alignment, save_figure

    paths = []
    for k, ch in enumerate(res.chunks):
        weights, tokens = ch.weights, ch.tokens
        if weights.shape[0] == 0:  # nothing decoded: still show the spectrogram, one empty row
            weights, tokens = weights.new_zeros(1, weights.shape[1]), ["(empty)"]
        suffix = f"_chunk{k}" if len(res.chunks) > 1 else ""
        fig = plot_spectrogram_alignment(ch.spec, weights, tokens, title=res.text)
        paths.append(save_figure(fig, stem.parent / f"{stem.name}{suffix}.png"))
    return paths


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="audio files (WAV/FLAC/OGG, any rate/channels; MP3 if libsndfile can)")


def _spec() -> InferenceSpec:
    return InferenceSpec(
        prog="attn-asr transcribe",
        description="Transcribe audio files with a trained checkpoint or model folder (one line per file; with "
        "--nbest K > 1, K lines '<file><TAB><score><TAB><transcript>').",
        module_cls=None,  # loaded by the lean Transcriber: transcribing imports no Lightning
        add_arguments=_add_arguments,
        inputs=_inputs,
        decode=_decode,
        batch_size=16,
        load=Transcriber.from_pretrained,
    )


def _folder(args: argparse.Namespace) -> int:
    """``export --format folder``: the PyTorch model folder, written by the Lightning module."""
    from core.cli.task import model_folder_export
    from tasks.speech.module import SpeechModule

    return model_folder_export(SpeechModule, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `attn-asr` (see module docstring). Returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["transcribe"]:  # inference imports no Lightning
        return run_cli(lambda a: run_inference(_spec(), list(a or [])[1:]), args)
    if args[:1] == ["export"]:  # an engine export is read and written without Lightning too
        from core.cli.export import export_command
        from tasks.speech.export import ENGINE_EXPORTS

        return run_cli(lambda a: export_command("attn-asr export", list(a or [])[1:], ENGINE_EXPORTS, _folder), args)
    from core.cli.task import task_main
    from tasks.speech.data import SpeechDataModule
    from tasks.speech.module import SpeechModule

    return task_main(args, SpeechModule, SpeechDataModule, _spec())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
