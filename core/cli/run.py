"""CLI glue: turn ``UserError`` into ``error: <msg>`` on stderr and exit status 2 (no traceback)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import CheckpointError, ConfigError, UserError

if TYPE_CHECKING:
    pass

__all__ = [
    "USER_ERROR_EXIT_CODE",
    "check_ckpt_path_arg",
    "ensure_resumable",
    "parse_device",
    "run_cli",
    "user_errors",
]

USER_ERROR_EXIT_CODE = 2  # same status argparse uses for bad arguments


def _report(err: UserError) -> None:
    print(f"error: {err}", file=sys.stderr, flush=True)


def _misconfiguration() -> tuple[type[BaseException], ...]:
    """Lightning's own "your configuration is invalid" error (e.g. ``--trainer.max_epochs -5``)."""
    try:
        from lightning.fabric.utilities.exceptions import MisconfigurationException
    except ImportError:  # pragma: no cover - Lightning is a dependency
        return ()
    return (MisconfigurationException,)


@contextmanager
def user_errors() -> Iterator[None]:
    """Context manager: on ``UserError`` (or Lightning's configuration error) print ``error: <msg>`` and
    ``sys.exit(2)``.

    Use it around code that cannot return an exit code (e.g. inside ``LightningCLI``). Checkpoint
    errors are ``UserError`` subclasses, so they are covered too.
    """
    try:
        yield
    except UserError as err:
        _report(err)
        raise SystemExit(USER_ERROR_EXIT_CODE) from None
    except _misconfiguration() as err:
        _report(UserError(f"invalid configuration: {err}"))
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
    """Make a LightningCLI ``--ckpt_path`` safe to load, or fail with a clear ``CheckpointError``.

    Call it right after ``LightningCLI.parse_arguments`` (before LightningCLI's own
    ``_parse_ckpt_path``, which ``torch.load``s an existing file to read its hyper-parameters):

    * a missing, truncated, corrupt, unsafe-pickle or other-task file becomes ``error: ...`` naming
      the file instead of a traceback;
    * an ``http(s)`` URL is downloaded once into the checkpoint cache (``core.io.checkpoint``) and replaced
      by that local file, so the file that was checked is the file Lightning loads (Lightning would
      otherwise fetch it again itself and load a URL with ``weights_only=False``);
    * ``weights_only`` is forced to True unless the user set it (Lightning's ``None`` means False for
      URLs).

    ``best`` means ``<trainer.default_root_dir>/checkpoints/best.ckpt`` (written by
    `core.train.callbacks.RunCheckpoint`), so it also works in a new process; ``last``/``hpc``/``registry:...``
    are resolved by Lightning itself.

    Args:
        config: the parsed LightningCLI namespace (``cli.config``); updated in place.
        task: the task name the checkpoint must belong to.
    """
    sub = config.get("subcommand")
    if not sub:
        return
    cfg = config[sub]
    if "weights_only" in cfg and cfg.get("weights_only") is None:
        cfg["weights_only"] = True
    ckpt = cfg.get("ckpt_path")
    if str(ckpt) == "best":
        # Lightning only knows "best" inside the process that trained; a new `test`/`validate` run
        # finds RunCheckpoint's best.ckpt in the run folder instead.
        trainer_cfg = cfg.get("trainer") or {}
        root = Path((trainer_cfg.get("default_root_dir") if hasattr(trainer_cfg, "get") else None) or ".")
        ckpt = root / "checkpoints" / "best.ckpt"
        if not ckpt.is_file():
            raise CheckpointError(
                f"--ckpt_path best: {ckpt} does not exist (fit writes it at validation); "
                "pass the checkpoint's path instead"
            )
    if ckpt and str(ckpt) not in ("last", "hpc") and not str(ckpt).startswith("registry"):
        from core.io.checkpoint import load_checkpoint, resolve_checkpoint

        local = resolve_checkpoint(ckpt)
        state = load_checkpoint(local, expected_task=task)
        if "pytorch-lightning_version" not in state or "state_dict" not in state:
            raise CheckpointError(
                f"{local}: not a Lightning training checkpoint (no 'pytorch-lightning_version'/'state_dict'); "
                "--ckpt_path needs a checkpoint written by `fit`"
            )
        cfg["ckpt_path"] = str(local)


def ensure_resumable(trainer: Any, monitor: str, mode: str = "max", every_n_train_steps: int = 100) -> list[str]:
    """Give a run built from any config the shipped configs' safety net; returns what was added.

    The shipped YAML configs list `core.train.callbacks.RunCheckpoint` (best + rolling) and
    `NonFiniteLossGuard`; a user's own config may not. Then Lightning's default ``ModelCheckpoint``
    would write into the logger's versioned folder, where ``fit --ckpt_path last`` never finds it, and
    a NaN would reach the weights. Call from ``before_fit``: Lightning's default checkpoint callback
    (no ``dirpath``, no ``monitor``) is replaced by a best-by-``monitor`` and a rolling
    (``every_n_train_steps``) `RunCheckpoint`, and a ``skip`` guard is added if none is there. A
    checkpoint callback the user configured, or ``enable_checkpointing=False``, is left alone.

    Args:
        trainer: the CLI's trainer (before ``fit``).
        monitor: validation metric for ``best.ckpt``.
        mode: ``max`` or ``min`` for ``monitor``.
        every_n_train_steps: rolling ``last.ckpt`` interval.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    from core.train.callbacks import NonFiniteLossGuard, RunCheckpoint, trainer_callbacks

    added: list[str] = []
    cbs = trainer_callbacks(trainer)
    defaults = [
        cb
        for cb in cbs
        if type(cb) is ModelCheckpoint and cb.dirpath is None and cb.monitor is None and cb._every_n_train_steps == 0
    ]
    if defaults and not any(isinstance(cb, RunCheckpoint) for cb in cbs):
        for cb in defaults:
            cbs.remove(cb)
        cbs.append(RunCheckpoint(monitor=monitor, mode=mode, save_last=True, filename="best"))
        cbs.append(RunCheckpoint(every_n_train_steps=every_n_train_steps, save_top_k=0, save_last=True))
        added.append("RunCheckpoint")
    if not any(isinstance(cb, NonFiniteLossGuard) for cb in cbs):
        cbs.append(NonFiniteLossGuard("skip"))
        added.append("NonFiniteLossGuard")
    return added


def parse_device(name: str) -> str:
    """The device of an inference ``--device`` option (``torch.device``'s name for it), or ``ConfigError`` if it is
    unusable here.

    ``cpu`` is answered without importing PyTorch: an export on CTranslate2 runs without it.

    Args:
        name: ``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...

    Raises:
        ConfigError: not a device name, or that device is not available on this machine.
    """
    if name == "cpu":
        return name
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"--device {name!r}: not a torch device ({err}); e.g. cpu, cuda, cuda:1") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return str(dev)
