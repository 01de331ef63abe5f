"""Loading and saving a task module: one safe path for checkpoints (and model folders) of every task.

A task's LightningModule mixes in :class:`TaskCheckpointMixin` and supplies a few class attributes and
hooks; everything else (``weights_only`` loading, task check, validated hyper-parameters, the weight-shape
check made before any real allocation, one mismatch message, eval mode) is written here once::

    class TranslationModule(TaskCheckpointMixin, pl.LightningModule):
        TASK = "translation"
        MONITOR, MONITOR_MODE = "val/bleu", "max"
        HPARAM_BOUNDS = {"hidden_dim": (2, 8192), ...}

        def task_metadata(self) -> dict: ...            # what a checkpoint needs beyond the weights
        def restore_metadata(self, meta, source): ...   # the reverse (tokenizers, vocabularies, ...)

    model = TranslationModule.load_from_checkpoint("last.ckpt")   # -> load_task_module(...)

How a module is rebuilt from an untrusted file (checks, order, the meta-device probe) is
:mod:`core.io.rebuild`; model folders are :mod:`core.io.model_folder`. This mixin puts both behind the class
methods a LightningModule user expects (``load_from_checkpoint``, ``from_pretrained``, ``save_pretrained``)
and Lightning's own checkpoint hooks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import torch

from core.errors import CheckpointError
from core.io.checkpoint import META_KEY, make_metadata
from core.io.hparams import check_plain
from core.io.model_folder import load_task_model, save_pretrained
from core.io.model_folder import push_to_hub as push_folder  # the method's argument has the hub's name
from core.io.rebuild import format_version, load_task_module, raise_if_mismatch

__all__ = ["TaskCheckpointMixin"]

M = TypeVar("M", bound="TaskCheckpointMixin")


class TaskCheckpointMixin:
    """Checkpoint I/O of a task's LightningModule (mix in before ``LightningModule``).

    Class attributes:
        TASK: the task name stored in and checked against every checkpoint.
        MONITOR, MONITOR_MODE: the validation metric ``best.ckpt`` follows (``TaskCLI``).
        HPARAM_BOUNDS: inclusive ``(low, high)`` per numeric hyper-parameter (sizes capped).
        HPARAM_RENAMES: old hyper-parameter name -> current name, for earlier checkpoints.
        HPARAMS_FROM_DATA: hyper-parameters the data module decides (not merged from ``--ckpt_path``).
    """

    TASK: ClassVar[str]
    MONITOR: ClassVar[str]
    MONITOR_MODE: ClassVar[str] = "max"
    HPARAM_BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = {}
    HPARAM_RENAMES: ClassVar[Mapping[str, str]] = {}
    HPARAMS_FROM_DATA: ClassVar[tuple[str, ...]] = ()
    FOLDER_FILES: ClassVar[Mapping[str, str]] = {}  # metadata key (dotted) -> its own file in a model folder
    FOLDER_RAW_FILES: ClassVar[Mapping[str, str]] = {}  # the same for core.io.model_folder.file_value files (bytes)

    @classmethod
    def hparam_bounds(cls) -> dict[str, tuple[float, float]]:
        """Bounds of every numeric option."""
        return dict(cls.HPARAM_BOUNDS)

    # ---------------------------------------------------------------- hooks a task overrides
    def task_metadata(self) -> dict[str, Any]:
        """Plain data a checkpoint needs besides weights and hyper-parameters (tokenizers, ...)."""
        return {}

    def restore_metadata(self, meta: Mapping[str, Any], source: str) -> None:
        """Apply :meth:`task_metadata` read back from ``source`` (validate it: it is untrusted)."""

    @classmethod
    def hparams_from_metadata(cls, meta: Mapping[str, Any], source: str) -> dict[str, Any]:
        """Hyper-parameters the metadata decides (they are validated like the others)."""
        return {}

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any], version: int) -> dict[str, Any]:
        """Map hyper-parameters of an earlier checkpoint ``version`` to today's names (data only)."""
        return hparams

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        """Map weight names of an earlier checkpoint ``version`` to today's modules."""
        return state

    def check_loaded(self, source: str) -> None:
        """Check the loaded weights/buffers make sense (e.g. positive feature statistics)."""

    # ---------------------------------------------------------------- Lightning hooks
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = make_metadata(self.TASK, **self.task_metadata(), training=_training_record(self))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """``--ckpt_path`` restores (fit/validate/test/predict): metadata back, then the one shape check.

        Runs before Lightning loads the weights, so weights that do not fit the configured module become a
        ``CheckpointError`` naming the file instead of a ``load_state_dict`` traceback.
        """
        trainer = getattr(self, "_trainer", None)
        source = f"checkpoint {getattr(trainer, 'ckpt_path', None) or '(given)'}"
        meta = checkpoint.get(META_KEY)
        meta = meta if isinstance(meta, dict) else {}
        check_plain(meta, f"{source}: metadata")
        version = format_version(meta, source)
        state = checkpoint.get("state_dict")
        if not isinstance(state, dict):
            raise CheckpointError(f"{source} has no 'state_dict' (not a Lightning checkpoint)")
        checkpoint["state_dict"] = type(self).upgrade_state_dict(state, version)
        self.restore_metadata(meta, source)
        strict = bool(getattr(self, "strict_loading", True))
        raise_if_mismatch(
            self.state_dict(),
            checkpoint["state_dict"],
            strict,
            source,  # type: ignore[attr-defined]
            f"the configured {type(self).__name__} (do the --model.* options match the run that wrote it?)",
        )

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls: type[M],
        checkpoint_path: str | os.PathLike[str],
        map_location: str | torch.device | None = "cpu",
        strict: bool = True,
        sha256: str | None = None,
        **overrides: Any,
    ) -> M:
        """Rebuild the module from a checkpoint file or http(s) URL, safely; see :func:`load_task_module`."""
        return load_task_module(
            cls, checkpoint_path, map_location=map_location, strict=strict, sha256=sha256, **overrides
        )

    @classmethod
    def from_pretrained(
        cls: type[M],
        pretrained_model_name_or_path: str | os.PathLike[str],
        map_location: str | torch.device | None = "cpu",
        strict: bool = True,
        **overrides: Any,
    ) -> M:
        """Load a model folder, ``hf://ORG/NAME[@REVISION]`` or a ``.ckpt`` (``core.io.model_folder.load_task_model``).

        Strict by default: a missing weight is an error, never a random initialisation.
        """
        return load_task_model(
            cls, pretrained_model_name_or_path, map_location=map_location, strict=strict, **overrides
        )

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        metrics: Mapping[str, float] | None = None,
        figure: str | os.PathLike[str] | None = None,
        push_to_hub: str | None = None,
        overwrite: bool = False,
    ) -> str:
        """Write this model as a model folder (``core.io.model_folder``); optionally upload it to ``push_to_hub``.

        An existing model folder of this suite is replaced; a file or a non-empty foreign folder is refused
        (with ``overwrite``, the model's files are added beside what is there; nothing is ever deleted).

        Returns:
            The folder path, or the hub URL when pushed.
        """
        folder = save_pretrained(self, save_directory, metrics=metrics, figure=figure, overwrite=overwrite)
        return push_folder(folder, push_to_hub) if push_to_hub else str(folder)


def _training_record(module: Any) -> dict[str, Any]:
    """How the checkpoint was made, for model cards: command, data options, steps, the latest scores."""
    import json
    import shlex
    import sys

    trainer = getattr(module, "_trainer", None)
    record: dict[str, Any] = {"command": " ".join(shlex.quote(a) for a in sys.argv)}
    if trainer is None:
        return record
    record["steps"] = int(trainer.global_step)
    dm = getattr(trainer, "datamodule", None)
    if dm is not None and getattr(dm, "hparams", None):
        # plain data only (paths and the like become strings): the checkpoint stays weights_only-loadable
        record["data"] = json.loads(json.dumps({type(dm).__name__: dict(dm.hparams)}, default=str))
    record["metrics"] = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith(("val/", "test/")) and getattr(v, "numel", lambda: 1)() == 1
    }
    return record
