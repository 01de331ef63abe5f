"""Finding and loading the model of each task for the app (no Gradio here).

Everything goes through :func:`load_task_model`, which hands a ``.ckpt``, a model folder (``config.json``)
or ``hf://ORG/NAME[@REV]`` to the task's lean loader (its registered inference class's ``from_pretrained``:
``Translator``, ``Captioner``, ``Transcriber``), so the app imports no Lightning; a run folder holding checkpoints
(``<task>.ckpt``, ``best.ckpt``, ...) is searched for the right file first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import CheckpointError, UserError
from tasks.registry import REGISTRY

__all__ = ["CHECKPOINT_NAMES", "TASKS", "demo_checkpoints", "find_checkpoint", "load_task_model"]

#: the app's tasks, in tab order
TASKS: tuple[str, ...] = ("translation", "captioning", "speech")

#: names tried, in order, inside a model folder (``<task>.ckpt`` is what ``make demo`` writes)
CHECKPOINT_NAMES: tuple[str, ...] = ("{task}.ckpt", "best.ckpt", "last.ckpt", "model.ckpt")


def _inference_class(task: str) -> Any:
    """The task's Lightning-free inference class (imported lazily: each pulls in its own task package)."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    cls = REGISTRY[task].inference_class()
    assert cls is not None  # every task of the app registers one
    return cls


def find_checkpoint(task: str, path: str | Path) -> Path:
    """The checkpoint file of ``task`` that ``path`` names.

    Args:
        task: one of :data:`TASKS`.
        path: a ``.ckpt`` file, or a folder holding one (``<task>.ckpt``, ``best.ckpt``, ``last.ckpt``,
            ``model.ckpt``, ``checkpoints/`` below it, or a single ``*.ckpt``).

    Raises:
        core.errors.CheckpointError: nothing usable there (the message names the path and what was looked for).
    """
    text = str(path)
    p = Path(text).expanduser()
    if p.is_file():
        return p
    if not p.exists():
        raise CheckpointError(f"{task}: {p} does not exist (expected a .ckpt file or a model folder)")
    for folder in (p, p / "checkpoints"):
        for name in CHECKPOINT_NAMES:
            cand = folder / name.format(task=task)
            if cand.is_file():
                return cand
    found = sorted(p.glob("*.ckpt"))
    if len(found) == 1:
        return found[0]
    tried = ", ".join(n.format(task=task) for n in CHECKPOINT_NAMES)
    what = (
        f"{len(found)} .ckpt files ({', '.join(f.name for f in found)}), so which one is unclear"
        if found
        else "no .ckpt file"
    )
    raise CheckpointError(f"{task}: model folder {p} has {what}; expected one of {tried}, or pass the file itself")


def load_task_model(task: str, path: str | Path, device: str = "cpu", threads: int | None = None) -> Any:
    """Load the model of ``task`` from a checkpoint file or model folder, in eval mode.

    Args:
        task: ``translation``, ``captioning`` or ``speech``.
        path: a model folder (``export``), ``hf://ORG/NAME[@REV]``, or see :func:`find_checkpoint`.
        device: torch device for the weights.
        threads: an engine export's CPU threads (None: the engine's default; PyTorch's are set by the caller).

    Returns:
        The task's inference object, loaded without Lightning through the same checks as its module's
        ``from_pretrained`` (``Translator``, ``Captioner`` or ``Transcriber``).

    Raises:
        core.errors.UserError: unknown task; ``CheckpointError`` for a missing, unsafe, corrupt or
            other-task checkpoint (the message names the file).
    """
    from core.io.folder_files import CONFIG_NAME

    cls = _inference_class(task)
    text = str(path)
    if text.startswith("hf://") or (Path(text).expanduser() / CONFIG_NAME).is_file():
        return cls.from_pretrained(text, map_location=device, threads=threads)  # a hub id or a model folder
    return cls.from_pretrained(find_checkpoint(task, path), map_location=device, threads=threads)


def demo_checkpoints(folder: str | Path) -> dict[str, Path]:
    """The models ``make demo`` wrote under ``folder``: ``<folder>/<task>/model`` (the exported model folder)
    or ``<folder>/<task>/<task>.ckpt``.

    Raises:
        core.errors.CheckpointError: the folder is missing or holds none of the three.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CheckpointError(f"--from {root}: no such folder (run `make demo` first; it writes demo_output/)")
    out = {}
    for t in TASKS:
        for cand in (root / t / "model", root / t / f"{t}.ckpt"):
            if (cand / "config.json").is_file() or cand.is_file():
                out[t] = cand
                break
    if not out:
        wanted = ", ".join(f"{t}/{t}.ckpt" for t in TASKS)
        raise CheckpointError(f"--from {root}: none of {wanted} is there (run `make demo` first)")
    return out
