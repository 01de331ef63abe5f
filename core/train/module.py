"""`TaskModule`: the one LightningModule of every task, configured by a plain :class:`core.train.task.Task`.

It owns everything that is the same in every task:

* the train/validate/test/predict steps, calling the task's ``objective``, ``evaluate`` and ``predict``;
  a data module may serve several validation or test loaders, each logged under the prefix the task names
  it by (``Task.eval_prefixes``: ``test/*`` and ``unseen/*``; default one loader, ``val/*`` / ``test/*``);
* corpus scores (BLEU, CIDEr, CER) per evaluation loader, gathered over ranks and de-duplicated once
  (:class:`core.metrics.corpus.CorpusOutputs`), weighted epoch means, figures logged after each validation;
* the optimizer and LR schedule (:class:`core.train.schedule.OptimizerOptions`);
* checkpoints and model folders: ``load_from_checkpoint``, ``from_pretrained``, ``save_pretrained`` and
  Lightning's checkpoint hooks, with the task's artifacts stored by name beside the weights (``core.io``);
* the throughput count of the progress bar (``core.train.progress_bar``).

A task's module class only declares its typed options (the ``--model.*`` of its CLI, validated when read back
from a file) and hands its :class:`~core.train.task.Task` to this constructor::

    class SentimentModule(TaskModule[SentimentNetwork]):
        TASK, MONITOR = "sentiment", "val/acc"

        def __init__(self, vocab: dict | None = None, embed_dim: int = 32, hidden_dim: int = 32, ...) -> None:
            tokenizer = tokenizer_from_dict(vocab or ...)
            super().__init__(SentimentTask(tokenizer, embed_dim, hidden_dim, attention_hidden))
            self.save_hyperparameters()

The network is ``self.model`` (built by the task, now or when the data has decided its vocabulary).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, Literal, TypeVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric

from core.cli.output import Prediction
from core.errors import CheckpointError, ConfigError
from core.io.checkpoint import make_metadata
from core.io.checks import META_KEY, format_version
from core.io.hparams import check_plain
from core.io.model_folder import load_task_model, save_pretrained
from core.io.model_folder import push_to_hub as push_folder  # the method's argument has the hub's name
from core.io.rebuild import load_task_module, raise_if_mismatch
from core.metrics.corpus import CorpusOutputs
from core.train.callbacks import empty_batch_loss, log_figure
from core.train.schedule import OptimizerOptions, configure_optimizer
from core.train.task import EvalKind, NetT, Stage, Task

__all__ = ["TaskModule"]

M = TypeVar("M", bound="TaskModule[Any]")

#: what an evaluation loader's metric prefix may be (a key of the module's corpus dict, a metric name's head)
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
#: names that are not evaluation prefixes (``train/*`` is training's; the others are `nn.ModuleDict` attributes)
_RESERVED_PREFIXES = frozenset({"train", *(n for n in dir(nn.ModuleDict()) if _PREFIX.fullmatch(n))})


class TaskModule(pl.LightningModule, Generic[NetT]):
    """The core module of every task (see the module docstring).

    Class attributes a task's module declares:
        TASK: the task name stored in and checked against every checkpoint.
        MONITOR, MONITOR_MODE: the validation metric ``best.ckpt`` follows (``core.cli.task.TaskCLI``).
        HPARAM_BOUNDS: inclusive ``(low, high)`` per numeric option of the task (sizes capped); the optimizer's
            come from :attr:`OptimizerOptions.BOUNDS`.
        HPARAM_RENAMES: old option name -> current name, for earlier checkpoints.
        HPARAMS_FROM_DATA: options the data module decides (not merged from ``--ckpt_path``).
        FOLDER_FILES: artifact name (dotted) -> its own file in a model folder; FOLDER_RAW_FILES the same for
            files kept byte for byte (``core.io.model_folder.file_value``).

    Args:
        task: the task's parts.
    """

    TASK: ClassVar[str]
    MONITOR: ClassVar[str]
    MONITOR_MODE: ClassVar[Literal["min", "max"]] = "max"
    HPARAM_BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = {}
    HPARAM_RENAMES: ClassVar[Mapping[str, str]] = {}
    HPARAMS_FROM_DATA: ClassVar[tuple[str, ...]] = ()
    FOLDER_FILES: ClassVar[Mapping[str, str]] = {}
    FOLDER_RAW_FILES: ClassVar[Mapping[str, str]] = {}

    def __init__(self, task: Task[NetT, Any]) -> None:
        super().__init__()
        self.task = task
        self.model: NetT | None = None
        self.last_batch_units = 0.0  # read by core.train.progress_bar after each training step
        # corpus outputs per evaluation loader prefix, scored by the task at epoch end (state is not saved in
        # checkpoints); the default loaders' up front, others' when an epoch names them (`_start_eval`)
        self.corpus = nn.ModuleDict({kind: CorpusOutputs(task.score) for kind in ("val", "test")})
        self.means = nn.ModuleDict()  # "<prefix>/<name>" -> MeanMetric, made when a task first reports one
        #: the prefix of each validation / test loader of the running evaluation (`Task.eval_prefixes`)
        self.loader_prefixes: dict[EvalKind, list[str]] = {}

    # ------------------------------------------------------------------ the network
    @property
    def THROUGHPUT_UNIT(self) -> str:
        return self.task.unit

    @property
    def network(self) -> NetT:
        """The network (built first when the task can build it now)."""
        if self.model is None:
            self.model = self.task.build_network()
        return self.model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The network's forward."""
        return self.network(*args, **kwargs)

    def _datamodule(self) -> Any | None:
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def setup(self, stage: str) -> None:
        """Let the task take what the data decides, then build the network (rebuilt when that changed it)."""
        if (self.task.setup(stage, self._datamodule()) or self.model is None) and self.task.ready():
            self.model = self.task.build_network()

    def configure_callbacks(self) -> list[pl.Callback]:
        return self.task.callbacks()

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        options = OptimizerOptions.from_hparams(self.hparams)
        return configure_optimizer(self, options, self.task.param_groups(self.network))

    # ------------------------------------------------------------------ steps
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count the batch's units while it is on the host (showing throughput never syncs with a GPU)."""
        try:
            self.last_batch_units = float(self.task.batch_units(batch)) if batch is not None else 0.0
        except (TypeError, KeyError, AttributeError):  # a batch built by hand: nothing to count
            self.last_batch_units = 0.0
        return batch

    def _log_objective(self, stage: Stage, batch: Any) -> Tensor | None:
        """Log a batch's objective under ``stage``: ``train`` or its evaluation loader's prefix (the names carry
        no dataloader index: each loader has its own prefix)."""
        out = self.task.objective(self.network, batch, stage)
        for name, value in out.counts.items():
            self.log(
                f"{stage}/{name}",
                value,
                reduce_fx="sum",
                on_step=False,
                on_epoch=True,
                sync_dist=True,
                batch_size=1,
                add_dataloader_idx=False,
            )
        if out.loss is None:
            return None
        sync = stage != "train"  # evaluation: every rank's mean
        self.log(
            f"{stage}/loss", out.loss, prog_bar=True, batch_size=out.size, sync_dist=sync, add_dataloader_idx=False
        )
        for name, value in out.terms.items():
            self.log(f"{stage}/{name}", value, batch_size=out.size, sync_dist=sync, add_dataloader_idx=False)
        return out.loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        loss = self._log_objective("train", batch)
        return empty_batch_loss(self) if loss is None else loss

    def _eval_step(self, batch: Any, kind: EvalKind, dataloader_idx: int) -> None:
        prefix = self._prefix(kind, dataloader_idx)
        if self._log_objective(prefix, batch) is None:
            return
        ev = self.task.evaluate(self.network, batch, prefix)
        if ev is None:
            return
        self._corpus(prefix).update(ev.indices, ev.hypotheses, ev.references)
        for name, (value, weight) in ev.means.items():
            key = f"{prefix}/{name}"
            if key not in self.means:
                self.means[key] = MeanMetric().to(self.device)
            mean = self.means[key]
            assert isinstance(mean, MeanMetric)
            mean.update(value, weight)
            # named explicitly: Lightning looks metric attributes up once, before this one may have existed
            self.log(key, mean, batch_size=len(ev.indices), metric_attribute=f"means.{key}", add_dataloader_idx=False)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", dataloader_idx)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> list[Prediction]:
        return self.task.predict(self.network, batch, self._datamodule(), dataloader_idx)

    # ------------------------------------------------------------------ evaluation loaders and their corpora
    def _prefix(self, kind: EvalKind, dataloader_idx: int) -> str:
        """The metric prefix of evaluation loader ``dataloader_idx`` (named at the epoch's start)."""
        prefixes = self.loader_prefixes.get(kind) or [kind]
        return prefixes[dataloader_idx] if dataloader_idx < len(prefixes) else f"{kind}{dataloader_idx}"

    def _loader_prefixes(self, kind: EvalKind) -> list[str]:
        """The prefix of every ``kind`` loader the trainer runs: the task's names, ``<kind><index>`` past them."""
        trainer = self.trainer
        batches = trainer.num_test_batches if kind == "test" else trainer.num_val_batches
        named = list(self.task.eval_prefixes(kind, self._datamodule()))
        prefixes = [named[i] if i < len(named) else f"{kind}{i}" for i in range(max(len(batches), 1))]
        for prefix in prefixes:
            if not _PREFIX.fullmatch(prefix) or prefix in _RESERVED_PREFIXES or prefixes.count(prefix) > 1:
                raise ConfigError(
                    f"{type(self.task).__name__}.eval_prefixes({kind!r}) names {len(prefixes)} {kind} loader(s) "
                    f"{prefixes}: each loader needs its own plain name (letters, digits, '_', '-'), not 'train' "
                    f"nor a name of nn.ModuleDict such as 'eval' or 'keys' ({prefix!r})"
                )
        return prefixes

    def _corpus(self, prefix: str) -> CorpusOutputs:
        """The corpus outputs of loader ``prefix`` (made on the module's device when first needed)."""
        if prefix not in self.corpus:
            # on the module's device like the rest of its state: a sync gathers there (NCCL needs CUDA tensors)
            self.corpus[prefix] = CorpusOutputs(self.task.score).to(self.device)
        corpus = self.corpus[prefix]
        assert isinstance(corpus, CorpusOutputs)  # an nn.ModuleDict yields plain modules
        return corpus

    def _start_eval(self, kind: EvalKind) -> None:
        self.loader_prefixes[kind] = self._loader_prefixes(kind)
        for prefix in self.loader_prefixes[kind]:
            self._corpus(prefix).reset()  # a sanity check or an interrupted epoch may have left outputs

    def _finish_eval(self, kind: EvalKind) -> None:
        # Loader by loader, in the same order on every rank: compute() is a collective under DDP, so every rank
        # calls it for every loader, also one it saw no batch of.
        for prefix in self.loader_prefixes.get(kind) or [kind]:
            corpus = self._corpus(prefix)
            scores = corpus.compute() if corpus.update_called or self.trainer.world_size > 1 else {}
            corpus.reset()
            # extra scores (e.g. alignment against gold links) cost a pass each: not in the sanity check
            if self.model is not None and not self.trainer.sanity_checking:
                scores.update(self.task.epoch_scores(self.model, self._datamodule(), prefix))
            for name, value in scores.items():
                key = f"{prefix}/{name}"
                # the same value on every rank (computed from the gathered corpus); sync_dist averages equal values
                self.log(key, value, prog_bar=key == self.MONITOR, sync_dist=True, add_dataloader_idx=False)

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval("test")

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")
        if not self.trainer.sanity_checking and self.trainer.is_global_zero:
            for tag, fig in self.task.figures(self.network, self._datamodule()):
                log_figure(self, tag, fig)

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    # ------------------------------------------------------------------ what a checkpoint holds besides weights
    def task_metadata(self) -> dict[str, Any]:
        """The task's artifacts by name (plain data), so the checkpoint alone can run the model."""
        return self.task.artifacts()

    def restore_metadata(self, meta: Mapping[str, Any], source: str) -> None:
        """Give the task its artifacts read back from ``source``; rebuild the network when they change it."""
        if self.task.restore(meta, source) or self.model is None:
            self.model = self.task.build_network()
            if self._trainer is not None:
                self.model.to(self.device)  # a --ckpt_path restore: the data follows the checkpoint's artifacts
                fn = self.trainer.state.fn
                self.task.setup(fn.value if fn else "fit", self._datamodule())

    def check_loaded(self, source: str) -> None:
        self.task.check_loaded(self.network, source)

    @classmethod
    def hparam_bounds(cls) -> dict[str, tuple[float, float]]:
        """Bounds of every numeric option: the optimizer's and the task's."""
        return {**OptimizerOptions.BOUNDS, **cls.HPARAM_BOUNDS}

    @classmethod
    def hparams_from_metadata(cls, meta: Mapping[str, Any], source: str) -> dict[str, Any]:
        """Options the stored artifacts decide (validated like the others)."""
        return {}

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any], version: int) -> dict[str, Any]:
        """Map options of an earlier checkpoint ``version`` to today's names (data only)."""
        return hparams

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        """Map weight names of an earlier checkpoint ``version`` to today's modules."""
        return state

    # ------------------------------------------------------------------ Lightning's checkpoint hooks
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = make_metadata(self.TASK, **self.task_metadata(), training=_training_record(self))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """``--ckpt_path`` restores (fit/validate/test/predict): metadata back, then the one shape check.

        Runs before Lightning loads the weights, so weights that do not fit the configured module become a
        ``CheckpointError`` naming the file instead of a ``load_state_dict`` traceback.
        """
        trainer = self._trainer
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
        raise_if_mismatch(
            self.state_dict(),
            checkpoint["state_dict"],
            bool(self.strict_loading),
            source,
            f"the configured {type(self).__name__} (do the --model.* options match the run that wrote it?)",
        )

    # ------------------------------------------------------------------ loading and saving, as users call them
    @classmethod
    def load_from_checkpoint(  # type: ignore[override]  # Lightning's takes hparams_file and unpickles
        cls: type[M],
        checkpoint_path: str | os.PathLike[str],
        map_location: str | torch.device | None = "cpu",
        strict: bool | None = True,
        sha256: str | None = None,
        **overrides: Any,
    ) -> M:
        """Rebuild the module from a checkpoint file or http(s) URL, safely (``core.io.rebuild``)."""
        return load_task_module(
            cls, checkpoint_path, map_location=map_location, strict=bool(strict), sha256=sha256, **overrides
        )

    @classmethod
    def from_pretrained(
        cls: type[M],
        pretrained_model_name_or_path: str | os.PathLike[str],
        map_location: str | torch.device | None = "cpu",
        strict: bool = True,
        **overrides: Any,
    ) -> M:
        """Load a model folder, ``hf://ORG/NAME[@REVISION]`` or a ``.ckpt`` (``core.io.model_folder``).

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


def _training_record(module: pl.LightningModule) -> dict[str, Any]:
    """How the checkpoint was made, for model cards: command, data options, steps, the latest scores."""
    trainer = module._trainer
    record: dict[str, Any] = {"command": " ".join(shlex.quote(a) for a in sys.argv)}
    if trainer is None:
        return record
    record["steps"] = int(trainer.global_step)
    dm = getattr(trainer, "datamodule", None)
    if dm is not None and getattr(dm, "hparams", None):
        # plain data only (paths and the like become strings): the checkpoint stays weights_only-loadable
        record["data"] = json.loads(json.dumps({type(dm).__name__: dict(dm.hparams)}, default=str))
    loaders: Mapping[str, list[str]] = getattr(module, "loader_prefixes", {})
    heads = tuple(f"{p}/" for p in sorted({"val", "test"}.union(*loaders.values())))  # every evaluation loader's
    record["metrics"] = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith(heads) and getattr(v, "numel", lambda: 1)() == 1
    }
    return record
