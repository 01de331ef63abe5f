"""What a task hands the core module: a plain object, typed by the :class:`Task` protocol.

The core LightningModule (:class:`core.train.module.TaskModule`) owns the loop: train/validate/test/predict
steps, logging, corpus scores gathered over ranks, the optimizer, checkpoints and the throughput bar. A task
supplies only what differs, as one plain object:

* ``build_network()``: its network, picked by a plain name (a ``Literal`` option), never by a name read from
  a file;
* ``objective(network, batch, stage)``: the loss and what to log with it (:class:`Objective`);
* ``evaluate(network, batch, stage)``: the decoded text of a batch and its references (:class:`Evaluation`),
  which the core module scores as one corpus with ``score(hypotheses, references)``, one corpus per
  evaluation loader;
* ``eval_prefixes(stage, datamodule)``: the metric prefix of each validation or test loader the data module
  serves (default: one loader, logged as ``val/*`` or ``test/*``); ``objective``, ``evaluate`` and
  ``epoch_scores`` receive that prefix as their ``stage``, so a task tells its evaluation splits apart by name;
* ``artifacts()`` / ``restore(artifacts, source)``: what a checkpoint stores besides the weights, by name
  (tokenizers, a vocabulary, a feature configuration), as plain data;
* ``figures(network, datamodule)``: how to draw a few fixed examples.

Everything else has a default here; a task states what it uses by defining it. ``NetT`` is the task's network
class and ``BatchT`` its batch type, so the methods are checked against them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, TypeVar

import lightning.pytorch as pl
from matplotlib.figure import Figure
from torch import Tensor, nn

from core.cli.output import Prediction

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["EvalKind", "EvalStage", "Evaluation", "NetT", "Objective", "Stage", "Task", "options_from"]

#: which evaluation Lightning runs: validation (also the sanity check) or test
EvalKind = Literal["val", "test"]
#: the metric prefix of an evaluation loader: ``val`` or ``test`` by default, or a name the task gives it in
#: :meth:`Task.eval_prefixes` (e.g. captioning's ``unseen``); what ``evaluate`` and ``epoch_scores`` receive
EvalStage: TypeAlias = str
#: what ``objective`` receives: ``train``, or the prefix of the evaluation loader the batch came from
Stage: TypeAlias = str
NetT = TypeVar("NetT", bound=nn.Module)
OptionsT = TypeVar("OptionsT", bound="DataclassInstance")
BatchT = TypeVar("BatchT", contravariant=True)


@dataclass
class Objective:
    """The loss of one batch and what is logged with it.

    Attributes:
        loss: scalar to minimise; None when the batch had nothing to learn from (every row unusable): the
            step is skipped (in a rank-safe way under DDP), its ``counts`` still logged.
        size: examples in the batch (Lightning's weight for epoch means).
        terms: parts of the loss, logged as ``<stage>/<name>`` (e.g. ``ce``, ``ctc``; ``stage``: ``train`` or
            the evaluation loader's prefix).
        counts: per-epoch sums over steps and ranks, logged as ``<stage>/<name>`` (skipped rows, tokens): log
            the same keys for every batch, empty or not, so that every rank holds them.
    """

    loss: Tensor | None
    size: int
    terms: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Evaluation:
    """The decoded output of one evaluation batch.

    Attributes:
        indices: dataset index of each example (DDP padding repeats are dropped by it).
        hypotheses: the decoded text of each example.
        references: the reference texts of each example (one or more).
        means: ``{name: (value, weight)}`` of this batch, logged as ``<prefix>/<name>``, the weighted mean over
            the loader's epoch and the ranks (e.g. the share of characters whose attention lies inside their
            word, weighted by characters).
    """

    indices: Sequence[int]
    hypotheses: Sequence[str]
    references: Sequence[Sequence[str]]
    means: dict[str, tuple[float, float]] = field(default_factory=dict)


def options_from(cls: type[OptionsT], values: Mapping[str, Any], **changes: Any) -> OptionsT:
    """The options dataclass ``cls`` filled from the values of the same names, e.g. a module's constructor
    arguments (``options_from(SpeechOptions, locals())``) or its hyper-parameters; ``changes`` replace values.

    Keeps the task's typed options in one place: the module's signature lists them for the CLI, and the
    dataclass says which of them the task reads, without a third list that passes them one by one.
    """
    names = {f.name for f in fields(cls)}
    return cls(**{**{k: v for k, v in values.items() if k in names}, **changes})


class Task(Protocol[NetT, BatchT]):
    """A task's parts (see the module docstring). Subclass it explicitly to inherit the defaults."""

    #: what one training batch is counted in, for the throughput bar (``tok``, ``img``, ``audio-s``)
    unit: str = "samples"

    def build_network(self) -> NetT:
        """A new network for the current options and artifacts (its weights are trained or loaded next)."""
        ...

    def ready(self) -> bool:
        """Whether :meth:`build_network` can run now (False: it waits for a checkpoint's artifacts)."""
        return True

    def setup(self, stage: str, datamodule: Any | None) -> bool:
        """Take what the data decides (tokenizers, feature statistics) before a stage; True when the network must
        be rebuilt for it."""
        return False

    def eval_prefixes(self, stage: EvalKind, datamodule: Any | None) -> list[str]:
        """The metric prefix of each ``stage`` loader, in the order the data module serves them.

        Each loader is scored as its own corpus and logged as ``<prefix>/<name>``; ``objective``, ``evaluate``
        and ``epoch_scores`` get the prefix as their ``stage``. Prefixes are distinct plain names (letters,
        digits, ``_`` and ``-``). A loader past the end of the list is named ``<stage><index>`` (``test1``);
        names past the number of loaders are not used. Default: ``[stage]``.
        """
        return [stage]

    def objective(self, network: NetT, batch: BatchT, stage: Stage) -> Objective:
        """The loss of a batch (``stage``: ``train`` or the prefix of the evaluation loader it came from)."""
        ...

    def evaluate(self, network: NetT, batch: BatchT, stage: EvalStage) -> Evaluation | None:
        """Decode an evaluation batch of the loader ``stage`` names (its prefix) for the corpus scores (None:
        nothing to score in it)."""
        return None

    def score(self, hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
        """Corpus scores of every evaluated example, in dataset order (``{"bleu": ..., "chrf": ...}``)."""
        return {}

    def epoch_scores(self, network: NetT, datamodule: Any | None, stage: EvalStage) -> dict[str, float]:
        """Scores computed once per evaluation and loader prefix ``stage`` from the data module (e.g. alignment
        error against gold links)."""
        return {}

    def figures(self, network: NetT, datamodule: Any | None) -> list[tuple[str, Figure]]:
        """``(tag, figure)`` of a few fixed validation examples, drawn after each validation on rank zero."""
        return []

    def predict(self, network: NetT, batch: BatchT, datamodule: Any | None, dataloader_idx: int) -> list[Prediction]:
        """One output row per input of a prediction batch."""
        return []

    def batch_units(self, batch: BatchT) -> float:
        """How many ``unit`` a host batch holds (counted before it moves to the device: no GPU sync)."""
        return 0.0

    def artifacts(self) -> dict[str, Any]:
        """What a checkpoint stores besides the weights, as plain data by name."""
        return {}

    def restore(self, artifacts: Mapping[str, Any], source: str) -> bool:
        """Take :meth:`artifacts` read back from ``source`` (untrusted: validate, name ``source`` in errors);
        True when the network must be rebuilt for them."""
        return False

    def param_groups(self, network: NetT) -> list[tuple[list[nn.Parameter], float]] | None:
        """``[(parameters, lr multiplier)]`` (e.g. a pretrained encoder at a lower rate); None: all at ``lr``."""
        return None

    def callbacks(self) -> list[pl.Callback]:
        """Callbacks the task needs whatever the configuration (e.g. a freeze schedule)."""
        return []

    def check_loaded(self, network: NetT, source: str) -> None:
        """Check loaded weights and buffers make sense (e.g. positive feature statistics)."""
        return None
