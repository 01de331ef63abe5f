"""``attn-translate``: train/evaluate with LightningCLI, translate from a checkpoint.

Usage::

    attn-translate fit --config configs/translation/default.yaml
    attn-translate fit --config configs/translation/default.yaml --ckpt_path last     # resume
    attn-translate test --config configs/translation/default.yaml --ckpt_path PATH
    attn-translate predict --config configs/translation/default.yaml --ckpt_path PATH \\
        --data.predict_path input.en [--predict_output out.es]
    attn-translate translate --ckpt PATH "I love you" "the red car"    # one translation per line
    echo "I love you" | attn-translate translate --ckpt PATH           # stdin, batched
    attn-translate translate --ckpt PATH --beam 5 --nbest 3 --plot plots/ "she sees them"

User mistakes (missing/corrupt/foreign checkpoint, bad data file, bad option) print ``error: ...`` on
stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter

from core.cli import parse_device, run_cli
from core.errors import ConfigError
from core.task_cli import TaskCLI

__all__ = ["TranslationCLI", "main", "translate_main"]


class TranslationCLI(TaskCLI):
    """LightningCLI for :class:`TranslationModule` + :class:`TranslationDataModule`.

    Adds ``--predict_output FILE`` (default stdout) and a :class:`TranslationWriter` for ``predict``, and
    makes ``--ckpt_path`` loading ``weights_only=True`` by default.
    """

    def before_predict(self) -> None:
        from tasks.translation.callbacks import TranslationWriter

        if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            out = self.config[self.subcommand].get("predict_output")
            self.trainer.callbacks.append(TranslationWriter(out))


def _lightning_main(argv: Sequence[str]) -> int:
    from tasks.translation.data import TranslationDataModule
    from tasks.translation.module import TranslationModule

    with warnings.catch_warnings():
        # main(argv) is called from Python (tests, scripts) with explicit args; LightningCLI warns when
        # the host process also has its own sys.argv, which is expected here.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        TranslationCLI(
            TranslationModule,
            TranslationDataModule,
            args=list(argv),
            # The data module shards its length-bucketed batches itself (Lightning cannot inject a
            # DistributedSampler into a custom batch sampler).
            trainer_defaults={"use_distributed_sampler": False},
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
        )
    return 0


def _batches(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for line in lines:
        batch.append(line.rstrip("\r\n"))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _translate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attn-translate translate",
        description="Translate sentences with a trained checkpoint (one output line per input).")
    p.add_argument("texts", nargs="*", help="sentences; none = read stdin line by line (batched)")
    p.add_argument("--ckpt", required=True, help="checkpoint path or http(s) URL")
    p.add_argument("--beam", type=int, default=5, help="beam size (1 = greedy), default 5")
    p.add_argument("--nbest", type=int, default=1,
                   help="hypotheses per input; with K > 1 lines are 'INPUT_INDEX<TAB>SCORE<TAB>TEXT'")
    p.add_argument("--plot", metavar="DIR", default=None,
                   help="save one alignment heatmap PNG per sentence into DIR")
    p.add_argument("--batch-size", type=int, default=64, help="sentences decoded together")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--sha256", default=None, help="expected checkpoint digest (prefix ok)")
    return p


def translate_main(argv: Sequence[str]) -> int:
    """The ``translate`` subcommand (argparse; see module docstring)."""
    args = _translate_parser().parse_args(list(argv))
    if args.beam < 1:
        raise ConfigError(f"--beam must be >= 1, got {args.beam}")
    if not 1 <= args.nbest <= args.beam:
        raise ConfigError(f"--nbest must be between 1 and --beam ({args.beam}), got {args.nbest}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    from core.checkpoint import resolve_checkpoint
    from core.viz import plot_alignment
    from tasks.translation.module import TranslationModule

    path = resolve_checkpoint(args.ckpt, sha256=args.sha256)
    model = TranslationModule.load_from_checkpoint(path, map_location=parse_device(args.device))
    plot_dir = Path(args.plot) if args.plot else None
    if plot_dir is not None:
        plot_dir.mkdir(parents=True, exist_ok=True)
    source: Iterable[str] = args.texts if args.texts else sys.stdin
    index = 0
    for batch in _batches(source, args.batch_size):
        results = model.translate(batch, beam=args.beam, nbest=args.nbest, return_attention=True,
                                  batch_size=args.batch_size)
        for text, res in zip(batch, results):
            hyps = res if args.nbest > 1 else [res]
            if not text.strip():
                hyps = []  # empty input line → empty output line (keeps lines aligned)
            if args.nbest == 1:
                print(hyps[0].text if hyps else "")
            else:
                for h in hyps:
                    print(f"{index}\t{h.score:.4f}\t{h.text}")
            if plot_dir is not None and hyps and hyps[0].attention is not None:
                best = hyps[0]
                fig = plot_alignment(best.attention, best.src_tokens, best.tgt_tokens,
                                     path=plot_dir / f"alignment_{index:04d}.png", title=f"{text} → {best.text}")
                _close(fig)
            index += 1
        sys.stdout.flush()
    return 0


def _close(fig: object) -> None:
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "translate":
        return translate_main(args[1:])
    return _lightning_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``attn-translate``; returns the exit status (2 for user errors)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
