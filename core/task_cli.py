"""The one LightningCLI of every task: safe ``--ckpt_path``, resumable runs, rank-safe ``predict`` output.

A task's ``cli.py`` builds :class:`TaskCLI` with its module and data module; the module class names its
task (``TASK``), the metric ``best.ckpt`` follows (``MONITOR``/``MONITOR_MODE``) and how one prediction
row becomes an output line (``format_prediction``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from core.cli import check_ckpt_path_arg, ensure_resumable

__all__ = ["TaskCLI"]


class TaskCLI(LightningCLI):
    """LightningCLI with the suite's safety nets.

    * ``--ckpt_path`` is checked before anything reads it (``core.cli.check_ckpt_path_arg``: weights-only,
      task check, URLs made local) and its hyper-parameters are validated as plain data against the
      module's typed signature (``core.hparams``) before LightningCLI merges them into the config. Lightning's
      own merge would hand them to jsonargparse, which imports and instantiates a ``{"class_path": ...}``
      dict found in a dict-typed option: a checkpoint could run code or truncate files.
    * ``fit`` gets ``RunCheckpoint`` + ``NonFiniteLossGuard`` when the config has none
      (``core.cli.ensure_resumable``), monitoring the module's ``MONITOR``.
    * ``predict`` writes one output (file given by ``--predict_output`` or stdout) from global rank 0, in
      input order (``core.predict.PredictionWriter``), unless the config adds its own writer.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--predict_output", type=str | None, default=None,
                            help="predict: write the predictions to this file (default: stdout)")
        self.link_task_arguments(parser)

    def link_task_arguments(self, parser: LightningArgumentParser) -> None:
        """Hook: a task links data options into model options here (e.g. a vocabulary)."""

    @property
    def task(self) -> str:
        return str(self.model_class.TASK)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        check_ckpt_path_arg(self.config, self.task)  # checked, URL made local, weights_only=True

    def _parse_ckpt_path(self) -> None:
        """Merge the ``--ckpt_path`` file's hyper-parameters into the config, as plain validated data.

        Replaces LightningCLI's version, which passes the file's ``hyper_parameters`` (and a ``_class_path``
        entry) straight to the parser.
        """
        if not self.config.get("subcommand"):
            return
        sub = self.config["subcommand"]
        ckpt_path = self.config[sub].get("ckpt_path")
        if not ckpt_path or not Path(str(ckpt_path)).is_file():
            return
        from core.checkpoint import load_checkpoint
        from core.hparams import validate_hparams

        ckpt = load_checkpoint(ckpt_path, expected_task=self.task)
        cls = self.model_class
        hparams = validate_hparams(cls, ckpt.get("hyper_parameters"), f"checkpoint {ckpt_path}",
                                   bounds=getattr(cls, "HPARAM_BOUNDS", None),
                                   renames=getattr(cls, "HPARAM_RENAMES", None))
        # Values the data module links into the model at instantiation are the data's to decide.
        for name in getattr(cls, "HPARAMS_FROM_DATA", ()):
            hparams.pop(name, None)
        if hparams:
            self.config = self.parser.parse_object({sub: {"model": hparams}}, self.config)

    def before_fit(self) -> None:
        cls = self.model_class
        ensure_resumable(self.trainer, monitor=cls.MONITOR, mode=cls.MONITOR_MODE)

    def before_predict(self) -> None:
        from lightning.pytorch.callbacks import BasePredictionWriter

        from core.predict import PredictionWriter

        if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            out = self.config[self.subcommand].get("predict_output")
            self.trainer.callbacks.append(PredictionWriter(out))
