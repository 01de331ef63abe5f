"""The one command line of every task: LightningCLI (fit/validate/test/predict), the inference subcommand
and ``export``.

A task's ``cli.py`` is a few lines: ``main(argv)`` calls :func:`task_main` with its module and data module
classes and its :class:`core.cli.infer.InferenceSpec`. The module class names its task (``TASK``) and the
metric ``best.ckpt`` follows (``MONITOR``/``MONITOR_MODE``); its ``predict_step`` returns
``core.cli.predict.Prediction`` rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol, cast

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from core.cli.export import EngineExport, export_command
from core.cli.run import check_ckpt_path_arg, ensure_resumable, run_cli, user_errors
from core.errors import ConfigError
from core.train.callbacks import trainer_callbacks

__all__ = ["TaskCLI", "TaskModuleClass", "export_main", "model_folder_export", "run_folder_lock", "task_main"]


class TaskModuleClass(Protocol):
    """What `TaskCLI` reads off a task's module class (``core.train.module.TaskModule`` declares all of it)."""

    TASK: ClassVar[str]
    MONITOR: ClassVar[str]
    MONITOR_MODE: ClassVar[str]
    HPARAM_RENAMES: ClassVar[Mapping[str, str]]
    HPARAMS_FROM_DATA: ClassVar[tuple[str, ...]]

    @classmethod
    def hparam_bounds(cls) -> dict[str, tuple[float, float]]: ...

    @classmethod
    def hparams_from_metadata(cls, meta: Mapping[str, Any], source: str) -> dict[str, Any]: ...

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str) -> Any: ...


@contextmanager
def run_folder_lock(root: Path) -> Iterator[None]:
    """Hold ``<root>/.attn-suite.lock`` while a ``fit`` runs there, or refuse naming the process that holds it.

    Two fits sharing one run folder would both exit 0 with ``best.ckpt`` from one run and ``last.ckpt`` from
    the other. An OS lock (``flock``) is released by the kernel when its process dies, so a crashed run never
    leaves a stale lock behind. Only the launching process (local/node rank 0) takes it: DDP workers it
    starts are part of the same run. Without ``fcntl`` (Windows) the run is not locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".attn-suite.lock"
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            other = f.read().strip() or "unknown"
            raise ConfigError(
                f"run folder {root} is in use by another fit (process {other}); wait for it to "
                f"finish or give this run its own --trainer.default_root_dir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class TaskCLI(LightningCLI):
    """LightningCLI with the suite's safety nets.

    * ``--ckpt_path`` is checked before anything reads it (``core.cli.run.check_ckpt_path_arg``: weights-only,
      task check, URLs made local) and its hyper-parameters are validated as plain data against the
      module's typed signature (``core.io.hparams``) before LightningCLI merges them into the config. Lightning's
      own merge would hand them to jsonargparse, which imports and instantiates a ``{"class_path": ...}``
      dict found in a dict-typed option: a checkpoint could run code or truncate files.
    * ``fit`` gets ``RunCheckpoint`` + ``NonFiniteLossGuard`` when the config has none
      (``core.cli.run.ensure_resumable``), monitoring the module's ``MONITOR``, and with a ``max_time`` a
      ``core.train.schedule.ScheduleCheck`` that warns when warm-up, decay, validation or checkpoints cannot fit it.
    * ``predict`` writes one output (file given by ``--predict_output`` or stdout) from global rank 0, in
      input order (``core.cli.predict.PredictionWriter``), unless the config adds its own writer.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--predict_output",
            type=str | None,
            default=None,
            help="predict: write the predictions to this file (default: stdout)",
        )
        self.link_task_arguments(parser)

    def link_task_arguments(self, parser: LightningArgumentParser) -> None:
        """Hook: a task links data options into model options here (e.g. a vocabulary)."""

    @property
    def module_class(self) -> type[TaskModuleClass]:
        """The task's module class (LightningCLI's ``model_class``)."""
        # LightningCLI types model_class as any LightningModule factory (or None); task_main always gives a task's
        # module class, and issubclass() cannot check a protocol with class attributes at run time.
        return cast("type[TaskModuleClass]", self.model_class)

    @property
    def task(self) -> str:
        return str(self.module_class.TASK)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        self._model_folder_as_checkpoint()
        check_ckpt_path_arg(self.config, self.task)  # checked, URL made local, weights_only=True

    def _model_folder_as_checkpoint(self) -> None:
        """``validate``/``test``/``predict --ckpt_path`` a model folder (or ``hf://ORG/NAME``): the folder is loaded
        safely (``core.io.model_folder``) and written as a checkpoint in a temporary folder, which Lightning then
        restores like any other. ``fit`` needs a checkpoint written by ``fit`` (a folder has no optimizer state)."""
        sub = self.config.get("subcommand")
        ckpt = self.config[sub].get("ckpt_path") if sub else None
        if not ckpt or not (str(ckpt).startswith("hf://") or Path(str(ckpt)).is_dir()):
            return
        if sub == "fit":
            raise ConfigError(
                f"--ckpt_path {ckpt}: fit resumes from a checkpoint written by fit (a model folder has no optimizer "
                "state); to train a model folder further, export it from its .ckpt or start a new run from it"
            )
        import tempfile

        import lightning
        import torch

        model = self.module_class.from_pretrained(str(ckpt))
        checkpoint: dict[str, Any] = {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": lightning.__version__,
        }
        model.on_save_checkpoint(checkpoint)
        self._folder_checkpoint = tempfile.TemporaryDirectory(prefix="attn-suite-folder-")  # removed with the CLI
        path = Path(self._folder_checkpoint.name) / "model.ckpt"
        torch.save(checkpoint, path)
        self.config[sub]["ckpt_path"] = str(path)

    def _parse_ckpt_path(self) -> None:
        """Merge the ``--ckpt_path`` file's hyper-parameters into the config, as plain validated data.

        Replaces LightningCLI's version, which passes the file's ``hyper_parameters`` (and a ``_class_path``
        entry) straight to the parser. What the file's metadata decides (``hparams_from_metadata``: e.g. a
        pretrained part rebuilt from its stored config, so that resuming never downloads it again) is merged
        too, also for ``--ckpt_path last`` (``<default_root_dir>/checkpoints/last.ckpt``, where
        ``RunCheckpoint`` writes it), which otherwise keeps the command line's options.
        """
        if not self.config.get("subcommand"):
            return
        sub = self.config["subcommand"]
        ckpt_path = self.config[sub].get("ckpt_path")
        only_meta = str(ckpt_path) == "last"
        if only_meta:
            trainer_cfg = self.config[sub].get("trainer") or {}
            root = (trainer_cfg.get("default_root_dir") if hasattr(trainer_cfg, "get") else None) or "."
            ckpt_path = Path(root) / "checkpoints" / "last.ckpt"
        if not ckpt_path or not Path(str(ckpt_path)).is_file():
            return
        from core.io.checkpoint import load_checkpoint
        from core.io.checks import META_KEY
        from core.io.hparams import check_plain, validate_hparams

        ckpt = load_checkpoint(ckpt_path, expected_task=self.task)
        cls = self.module_class
        source = f"checkpoint {ckpt_path}"
        raw = {} if only_meta else ckpt.get("hyper_parameters")
        meta = ckpt.get(META_KEY)
        if isinstance(raw, dict) and isinstance(meta, dict):
            check_plain(meta, f"{source}: metadata")
            raw = {**raw, **cls.hparams_from_metadata(meta, source)}
        hparams = validate_hparams(cls, raw, source, bounds=cls.hparam_bounds(), renames=cls.HPARAM_RENAMES)
        # Values the data module links into the model at instantiation are the data's to decide.
        for name in cls.HPARAMS_FROM_DATA:
            hparams.pop(name, None)
        if hparams:
            self.config = self.parser.parse_object({sub: {"model": hparams}}, self.config)

    def before_fit(self) -> None:
        cls = self.module_class
        ensure_resumable(self.trainer, monitor=cls.MONITOR, mode=cls.MONITOR_MODE)
        from lightning.pytorch.callbacks import Timer

        from core.train.schedule import ScheduleCheck

        cbs = trainer_callbacks(self.trainer)
        if any(isinstance(cb, Timer) for cb in cbs) and not any(isinstance(cb, ScheduleCheck) for cb in cbs):
            cbs.append(ScheduleCheck())  # a max_time budget: warn when the schedule cannot fit it
        from core.train.progress_bar import with_throughput

        cbs[:] = [with_throughput(cb) for cb in cbs]  # Lightning's default bar + throughput and next validation

    def _run_subcommand(self, subcommand: str) -> None:
        if subcommand != "fit":
            return super()._run_subcommand(subcommand)
        with run_folder_lock(Path(self.trainer.default_root_dir)):
            return super()._run_subcommand(subcommand)

    def before_predict(self) -> None:
        from lightning.pytorch.callbacks import BasePredictionWriter

        from core.cli.predict import PredictionWriter

        callbacks = trainer_callbacks(self.trainer)
        if not any(isinstance(cb, BasePredictionWriter) for cb in callbacks):
            out = self.config[self.subcommand].get("predict_output")
            callbacks.append(PredictionWriter(out))


def export_main(
    module_cls: Any, prog: str, argv: Sequence[str], engines: Mapping[str, EngineExport] | None = None
) -> int:
    """The ``export`` subcommand: load any ``--ckpt`` form, write the folder (or an engine's export, see
    ``core.cli.export``), optionally push it."""
    return export_command(prog, argv, engines or {}, lambda args: model_folder_export(module_cls, args))


def model_folder_export(module_cls: Any, args: argparse.Namespace) -> int:
    """``export --format folder``: the PyTorch model folder of ``args.ckpt``."""
    import math

    from core.io.jsonio import read_json
    from core.io.model_folder import load_task_model, push_to_hub

    metrics = None
    if args.metrics is not None:
        metrics = read_json(args.metrics, f"--metrics {args.metrics}")
        if not isinstance(metrics, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in metrics.values()
        ):
            raise ConfigError(f"--metrics {args.metrics}: expected a JSON object of name -> finite number")
    if args.figure is not None and not Path(args.figure).is_file():
        raise ConfigError(f"--figure {args.figure}: file not found")
    model = load_task_model(module_cls, args.ckpt)
    folder = model.save_pretrained(args.out, metrics=metrics, figure=args.figure, overwrite=args.overwrite)
    print(folder)
    if args.push:
        print(push_to_hub(folder, args.push, private=args.private))
    return 0


def task_main(
    argv: Sequence[str] | None,
    module_cls: Any,
    datamodule_cls: Any,
    inference: Any,
    cli_class: type[TaskCLI] = TaskCLI,
    **cli_kwargs: Any,
) -> int:
    """A task's ``main``: the inference subcommand, ``export``, or LightningCLI; returns the exit status.

    Args:
        argv: arguments without the program name (None = ``sys.argv[1:]``).
        module_cls: the task's LightningModule class.
        datamodule_cls: its LightningDataModule class.
        inference: its ``core.cli.infer.InferenceSpec`` (the subcommand is the last word of its ``prog``).
        cli_class: ``TaskCLI`` or a task's subclass (e.g. with linked arguments).
        **cli_kwargs: more LightningCLI arguments (``trainer_defaults``, ...).
    """
    from core.cli.infer import run_inference

    def main(args: Sequence[str] | None) -> int:
        args = list(sys.argv[1:] if args is None else args)
        program = inference.prog.split()[0]
        if args and args[0] == inference.prog.split()[-1]:
            return run_inference(inference, args[1:])
        if args and args[0] == "export":
            return export_main(module_cls, f"{program} export", args[1:])
        with warnings.catch_warnings():
            # main(argv) is called from Python (tests, scripts) with explicit args; LightningCLI warns when
            # the host process also has its own sys.argv, which is expected here.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            with user_errors():
                cli_class(
                    module_cls,
                    datamodule_cls,
                    args=args,
                    seed_everything_default=0,
                    save_config_kwargs={"overwrite": True},
                    **cli_kwargs,
                )
        return 0

    return run_cli(main, argv)
