"""``attn-translate``: train/evaluate with LightningCLI, translate from a checkpoint or model folder, export.

Usage::

    attn-translate fit --config configs/translation/default.yaml
    attn-translate fit --config configs/translation/default.yaml --ckpt_path last     # resume
    attn-translate test --config configs/translation/default.yaml --ckpt_path PATH
    attn-translate predict --config configs/translation/default.yaml --ckpt_path PATH \\
        --data.predict_path input.en [--predict_output out.es]
    attn-translate translate --ckpt PATH "I love you" "the red car"    # one translation per line
    echo "I love you" | attn-translate translate --ckpt PATH           # stdin, streamed in batches
    attn-translate translate --ckpt PATH --beam 5 --nbest 3 --plot plots/ "she sees them"
    attn-translate translate --ckpt PATH --plot plots/ --heads "she sees them"    # + one figure per head
    attn-translate export --ckpt PATH --out my-model [--push ORG/NAME]
    attn-translate export --ckpt PATH --out my-model-ct2 --format ctranslate2 --quantize int8   # Transformer
    attn-translate export --ckpt PATH --out my-model-onnx --format onnx [--quantize int8]
    attn-translate translate --ckpt my-model-ct2 "I love you"          # runs on the export's engine

``translate`` prints one line per input line (an empty or unreadable line gets an empty line, so line i
of the output always belongs to line i of the input; an unreadable one also gets ``error: ...`` on stderr
and the exit status 1). Mistakes that stop everything (unusable checkpoint, bad option) print
``error: ...`` and exit with status 2, without a traceback.
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
from core.errors import ConfigError, DataError
from tasks.translation.inference import Translator

__all__ = ["main"]


def _check_text(text: str, name: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # undecodable argv bytes arrive as lone surrogates
        raise DataError(f"{name}: not valid UTF-8 (position {err.start})") from None
    if "\x00" in text:
        raise DataError(f"{name}: contains a NUL byte")
    return text


def _stdin_line(raw: bytes, name: str) -> str:
    try:
        text = raw.rstrip(b"\r\n").decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{name}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    return _check_text(text, name)


def _inputs(args: argparse.Namespace) -> Iterator[InputItem]:
    if args.texts:
        for i, text in enumerate(args.texts):
            name = f"argument {i + 1}"
            yield InputItem(i, name, partial(lambda t, n, i: (i, _check_text(t, n)), text, name, i))
        return
    # Bytes, decoded line by line: one line that is not UTF-8 must not stop the others. (A text stream
    # without a byte buffer, e.g. io.StringIO in a notebook, is already decoded.)
    stream = getattr(sys.stdin, "buffer", sys.stdin)
    for i, raw in enumerate(stream):
        name = f"stdin line {i + 1}"
        read = _stdin_line if isinstance(raw, bytes) else (lambda t, n: _check_text(t.rstrip("\r\n"), n))
        yield InputItem(i, name, partial(lambda r, n, i, read: (i, read(r, n)), raw, name, i, read))


def _decode(model: Any, loaded: list[tuple[int, str]], args: argparse.Namespace) -> list[Output]:
    # Attention only for figures: CTranslate2 gives it sentence by sentence, and as tensors (PyTorch)
    results = model.hypotheses(
        [t for _, t in loaded], args.beam, args.nbest, need_weights=args.plot is not None, batch_size=args.batch_size
    )
    outputs = []
    for (index, text), res in zip(loaded, results):
        hyps = [] if not text.strip() else res
        rows: list[tuple[str, ...]]  # one field per line, or INDEX / SCORE / TEXT with --nbest
        if args.nbest == 1:
            rows = [(hyps[0].text if hyps else "",)]
        else:
            rows = [(str(index), f"{h.score:.4f}", h.text) for h in hyps]

        def plot(stem: Path, hyps: list[Any] = hyps, text: str = text) -> list[Path]:
            from core.viz import plot_alignment, save_figure

            if not hyps or hyps[0].attention is None:
                return []
            best = hyps[0]
            fig = plot_alignment(best.attention, best.src_tokens, best.tgt_tokens, title=f"{text} → {best.text}")
            paths = [save_figure(fig, stem.with_suffix(".png"))]
            if args.heads:
                paths += _head_figures(model, text, best, stem)
            return paths

        unknown = model.unknown_words(text)
        notes = [f"never seen in training: {', '.join(unknown)} (their translation is a guess)"] if unknown else []
        outputs.append(Output(rows, plot, notes))
    return outputs


def _head_figures(model: Any, text: str, best: Any, stem: Path) -> list[Path]:
    """``--heads``: one alignment per head of the last decoder layer's cross-attention (``STEM_headK.png``)."""
    from core.viz import plot_alignment, save_figure
    from tasks.translation.heads import layer_head_attention, target_ids

    ids = model.src_tokenizer.encode(text)[: model.max_source_tokens]
    last = layer_head_attention(model, ids, target_ids(model.tgt_tokenizer, best.tgt_tokens))[-1]  # (H, T, S)
    if last.shape[0] == 1:  # one head: the averaged figure is already it
        return []
    return [
        save_figure(
            plot_alignment(w, best.src_tokens, best.tgt_tokens, title=f"{best.text} (head {h + 1})"),
            stem.parent / f"{stem.name}_head{h + 1}.png",
        )
        for h, w in enumerate(last)
    ]


def _check(model: Translator, args: argparse.Namespace) -> None:
    if args.heads and model.engine != "pytorch":
        raise ConfigError(
            f"--heads draws each head from the PyTorch network's layers; this export runs on {model.engine}, "
            f"which returns only the heads' average (--plot draws it): use the PyTorch model folder for --heads"
        )


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="*", help="sentences; none = read stdin line by line (streamed in batches)")
    p.add_argument(
        "--heads",
        action="store_true",
        help="with --plot: also one figure per head of the last decoder layer's cross-attention "
        "(Transformer and pretrained Marian models; the main figure averages the heads)",
    )


def _spec() -> InferenceSpec:
    return InferenceSpec(
        prog="attn-translate translate",
        description="Translate sentences with a trained checkpoint or model folder (one output line per input; "
        "with --nbest K > 1 lines are 'INPUT_INDEX<TAB>SCORE<TAB>TEXT').",
        module_cls=None,  # loaded by the lean Translator: translating imports no Lightning
        add_arguments=_add_arguments,
        inputs=_inputs,
        decode=_decode,
        failed_rows=lambda item, args: [("",)] if args.nbest == 1 else [],
        batch_size=64,
        load=Translator.from_pretrained,
        check=_check,
    )


def _folder(args: argparse.Namespace) -> int:
    """``export --format folder``: the PyTorch model folder, written by the Lightning module."""
    from core.cli.task import model_folder_export
    from tasks.translation.module import TranslationModule

    return model_folder_export(TranslationModule, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``attn-translate``; returns the exit status (1: some inputs failed, 2: user error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["translate"]:  # inference imports no Lightning: a one-sentence call starts in about a second
        return run_cli(lambda a: run_inference(_spec(), list(a or [])[1:]), args)
    if args[:1] == ["export"]:  # an engine export is read and written without Lightning too
        from core.cli.export import export_command
        from tasks.translation.export import ENGINE_EXPORTS

        return run_cli(
            lambda a: export_command("attn-translate export", list(a or [])[1:], ENGINE_EXPORTS, _folder), args
        )
    from core.cli.task import task_main
    from tasks.translation.data import TranslationDataModule
    from tasks.translation.module import TranslationModule

    # The data module shards its length-bucketed batches itself (Lightning cannot inject a
    # DistributedSampler into a custom batch sampler).
    return task_main(
        args, TranslationModule, TranslationDataModule, _spec(), trainer_defaults={"use_distributed_sampler": False}
    )


if __name__ == "__main__":
    raise SystemExit(main())
