"""The tasks of the suite, by name: what the app, the shared tests and the tools need to reach each one.

A task registers one :class:`RegisteredTask`. Everything that runs "every task" reads this table: the app's
loader, the conformance test that takes each task through fit, export, reload and predict
(``tests/tasks/test_conformance.py``), the config checks. A fifth task gets all of it by adding its entry.

The import paths are constants of this file (code), never read from a checkpoint or any other file.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["REGISTRY", "RegisteredTask"]


@dataclass(frozen=True)
class RegisteredTask:
    """One task.

    Attributes:
        name: the task name stored in its checkpoints (``TaskModule.TASK``).
        cli: the module whose ``main(argv)`` is its command line.
        module: ``"package.module:Class"`` of its ``TaskModule``.
        smoke: ``fit`` arguments of a run that takes seconds on a CPU (configs and overrides), for checks that
            train every task.
        inference: ``"package.module:Class"`` of its inference object whose ``from_pretrained(path,
            map_location=..., sha256=...)`` loads a model without Lightning (``Translator``, ``Captioner``,
            ``Transcriber``: what ``attn-app`` and the inference subcommands run), or None.
    """

    name: str
    cli: str
    module: str
    smoke: tuple[str, ...]
    inference: str | None = None

    def main(self) -> Callable[[list[str]], int]:
        """The task's command line entry point."""
        main: Callable[[list[str]], int] = importlib.import_module(self.cli).main
        return main

    def module_class(self) -> Any:
        """The task's module class (imported now: each pulls in its own task package)."""
        return _class(self.module)

    def inference_class(self) -> Any | None:
        """The task's Lightning-free inference class (imported now), or None when it has none."""
        return None if self.inference is None else _class(self.inference)


def _class(where: str) -> Any:
    """The class ``"package.module:Class"`` names (a constant of this file)."""
    path, name = where.split(":")
    return getattr(importlib.import_module(path), name)


def _configs(task: str, *names: str) -> tuple[str, ...]:
    return tuple(arg for name in names for arg in ("--config", f"configs/{task}/{name}.yaml"))


REGISTRY: dict[str, RegisteredTask] = {
    t.name: t
    for t in (
        RegisteredTask(
            "translation",
            "tasks.translation.cli",
            "tasks.translation.module:TranslationModule",
            _configs("translation", "default", "tiny"),
            "tasks.translation.inference:Translator",
        ),
        RegisteredTask(
            "captioning",
            "tasks.captioning.cli",
            "tasks.captioning.module:CaptioningModule",
            _configs("captioning", "default", "tiny"),
            "tasks.captioning.inference:Captioner",
        ),
        RegisteredTask(
            "speech",
            "tasks.speech.cli",
            "tasks.speech.module:SpeechModule",
            (
                *_configs("speech", "default", "tiny"),
                *("--trainer.max_time", "null", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"),
                *("--data.synth_train", "16", "--data.synth_val", "8", "--data.synth_test", "8"),
            ),
            "tasks.speech.inference:Transcriber",
        ),
        RegisteredTask(
            "sentiment",
            "tasks.sentiment.cli",
            "tasks.sentiment.module:SentimentModule",
            (*_configs("sentiment", "default"), "--trainer.max_epochs", "1", "--data.size", "600"),
        ),
    )
}
