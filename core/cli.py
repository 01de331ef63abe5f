"""CLI glue: turn ``UserError`` into ``error: <msg>`` on stderr and exit status 2 (no traceback)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from core.errors import UserError

__all__ = ["USER_ERROR_EXIT_CODE", "check_ckpt_path_arg", "run_cli", "user_errors"]

USER_ERROR_EXIT_CODE = 2  # same status argparse uses for bad arguments


def _report(err: UserError) -> None:
    print(f"error: {err}", file=sys.stderr, flush=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Context manager: on ``UserError`` print ``error: <msg>`` and ``sys.exit(2)``.

    Use it around code that cannot return an exit code (e.g. inside ``LightningCLI``). Checkpoint
    errors are ``UserError`` subclasses, so they are covered too.
    """
    try:
        yield
    except UserError as err:
        _report(err)
        raise SystemExit(USER_ERROR_EXIT_CODE) from None


def run_cli(main_fn: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main_fn(argv)`` and map the outcome to an exit status.

    Args:
        main_fn: the real entry point; returns an exit code or ``None`` (= 0).
        argv: arguments without the program name (``None`` = ``sys.argv[1:]``, as argparse does).

    Returns:
        ``main_fn``'s code, 2 for ``UserError`` (message printed to stderr, no traceback), or the code
        of a ``SystemExit`` raised inside (argparse ``--help`` / usage errors).
    """
    try:
        code = main_fn(argv)
    except UserError as err:
        _report(err)
        return USER_ERROR_EXIT_CODE
    except SystemExit as exc:  # argparse/LightningCLI exit: keep their status instead of killing pytest
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    return 0 if code is None else int(code)


def check_ckpt_path_arg(config: Any, task: str) -> None:
    """Fail with a clear ``CheckpointError`` if a LightningCLI ``--ckpt_path`` file is not usable.

    Call it right after ``LightningCLI.parse_arguments``: LightningCLI itself ``torch.load``s an existing
    ``--ckpt_path`` (to read its hyper-parameters) before any ``before_*`` hook runs, so a missing,
    truncated, corrupt, unsafe-pickle or other-task file must be caught here to become ``error: ...``
    naming the file instead of a traceback. ``last``/``best``/``hpc``/``registry:...`` are left to Lightning.

    Args:
        config: the parsed LightningCLI namespace (``cli.config``).
        task: the task name the checkpoint must belong to.
    """
    sub = config.get("subcommand")
    ckpt = config[sub].get("ckpt_path") if sub else None
    if ckpt and str(ckpt) not in ("last", "best", "hpc") and not str(ckpt).startswith("registry"):
        from core.checkpoint import load_checkpoint

        load_checkpoint(ckpt, expected_task=task)
