"""``attn-app``: serve the local web app on the given models.

attn-app --from demo_output                       # the three models `make demo` trained
attn-app --translation runs/translation/default/checkpoints/best.ckpt --port 7861
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.errors import UserError
from tasks.app.inference import Limits
from tasks.app.loading import TASKS, demo_checkpoints, load_task_model

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``attn-app``."""
    p = argparse.ArgumentParser(
        prog="attn-app",
        description="Local web app: each task's output and its attention, plus an HTTP API.",
        epilog="Needs the app extra: pip install 'attn-suite[app]'. Serves on 127.0.0.1 unless --host says otherwise.",
    )
    for task in TASKS:
        p.add_argument(f"--{task}", metavar="CKPT", help=f"{task} model: a .ckpt file or a model folder")
    p.add_argument(
        "--from",
        dest="from_dir",
        metavar="DIR",
        type=Path,
        help="take every model `make demo` wrote there (DIR/<task>/<task>.ckpt), e.g. demo_output",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 = any free port)")
    p.add_argument("--device", default="cpu", help="torch device for the models (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of PyTorch and of engine exports (default 1)")
    d = Limits()
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="largest upload (MB)")
    p.add_argument("--max-audio-seconds", type=float, default=d.max_audio_seconds, help="longest audio (s)")
    p.add_argument("--max-sentences", type=int, default=d.max_sentences, help="lines translated per request")
    return p


def main(argv: list[str] | None = None) -> int:
    """Load the models and serve until interrupted; returns the exit code (2 for a user error)."""
    args = build_parser().parse_args(argv)
    try:
        paths: dict[str, str | Path] = dict(demo_checkpoints(args.from_dir)) if args.from_dir else {}
        paths.update({t: getattr(args, t) for t in TASKS if getattr(args, t)})
        if not paths:
            raise UserError(
                "no model given: pass --translation/--captioning/--speech CKPT (any subset) or --from demo_output"
            )
        if not 0 <= args.port <= 65535:
            raise UserError(f"--port must be 0..65535, got {args.port}")
        limits = Limits(
            max_sentences=args.max_sentences, max_upload_mb=args.max_upload_mb, max_audio_seconds=args.max_audio_seconds
        )
        try:
            from tasks.app.app import build_app, launch_app
        except ImportError as err:
            raise UserError(f"attn-app needs Gradio ({err.name} is missing): pip install 'attn-suite[app]'") from None
        import torch

        torch.set_num_threads(max(1, args.threads))
        models = {}
        for task, path in paths.items():
            print(f"loading {task} from {path}", flush=True)
            models[task] = load_task_model(task, path, device=args.device, threads=max(1, args.threads))
        demo = build_app(models, limits)
        print(
            f"serving {', '.join(models)} on http://{args.host}:{args.port or '<free port>'} (Ctrl+C stops)", flush=True
        )
        try:
            launch_app(demo, host=args.host, port=args.port or None, limits=limits, block=True)
        finally:
            demo.close(verbose=False)  # also removes the temporary examples folder
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. the port is taken
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
