"""Every shipped config parses against its task's typed signatures (one vocabulary of names, no stale keys)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tasks.registry import REGISTRY

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CLIS = {name: task.cli for name, task in REGISTRY.items()}  # configs/<task>/ of every registered task
OVERLAYS = {"tiny.yaml": "default.yaml", "gpu.yaml": "tatoeba.yaml"}  # overlays go on top of a base config


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_parses(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = importlib.import_module(CLIS[path.parent.name]).main
    configs = ["--config", str(path)]
    if path.name in OVERLAYS:
        configs = ["--config", str(path.parent / OVERLAYS[path.name]), *configs]
    assert main(["fit", *configs, "--print_config"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "model:" in printed and "trainer:" in printed
