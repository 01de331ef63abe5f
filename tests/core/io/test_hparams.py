"""Hyper-parameters from files are plain data, typed and bounded; no name in a file is ever imported."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import pytest
import torch

from core.errors import CheckpointError
from core.io.checkpoint import make_metadata
from core.io.hparams import check_plain, validate_hparams


class _Model:
    def __init__(
        self,
        hidden: int = 4,
        rate: float = 0.1,
        kind: Literal["a", "b"] = "a",
        name: str | None = None,
        opts: dict[str, Any] | None = None,
        mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
        flag: bool = False,
    ) -> None:
        pass


def test_valid_hparams_pass_and_bookkeeping_is_dropped() -> None:
    hp = {
        "hidden": 8,
        "rate": 1,
        "kind": "b",
        "name": None,
        "opts": {"k": [1, 2.0, "x"]},
        "mean": [0.5, 0.5, 0.5],
        "flag": True,
        "_instantiator": "evil.module.fn",
        "_class_path": "subprocess.Popen",
    }
    out = validate_hparams(_Model, hp, "f.ckpt", bounds={"hidden": (1, 16)})
    assert out == {k: v for k, v in hp.items() if not k.startswith("_")}


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("hidden", "8", "expected int"),
        ("hidden", True, "expected int"),
        ("hidden", 10**9, r"in \[1, 16\]"),
        ("hidden", -1, r"in \[1, 16\]"),
        ("rate", float("nan"), "finite"),
        ("rate", float("inf"), "finite"),
        ("kind", "c", "Literal"),
        ("mean", [0.1, 0.2], "tuple"),
        ("flag", 1, "expected bool"),
        ("opts", {"class_path": "subprocess.Popen", "init_args": {"args": ["true"]}}, "class_path"),
        ("opts", {"x": [{"class_path": "logging.FileHandler"}]}, "class_path"),
        ("opts", {"_target_": "os.system"}, "_target_"),
        ("opts", {1: 2}, "not a string"),
        ("opts", {"x": b"bytes"}, "plain data"),
    ],
)
def test_bad_values_are_refused_with_file_and_field(field: str, value: Any, match: str) -> None:
    with pytest.raises(CheckpointError, match=match) as err:
        validate_hparams(_Model, {field: value}, "f.ckpt", bounds={"hidden": (1, 16)})
    assert "f.ckpt" in str(err.value) and field in str(err.value)


def test_unknown_names_are_dropped_with_a_warning_and_renames_apply() -> None:
    with pytest.warns(UserWarning, match="does_not_exist"):
        out = validate_hparams(_Model, {"does_not_exist": 1, "old_hidden": 3}, "f", renames={"old_hidden": "hidden"})
    assert out == {"hidden": 3}


def test_not_a_mapping_and_deep_nesting() -> None:
    with pytest.raises(CheckpointError, match="expected a mapping"):
        validate_hparams(_Model, [1, 2], "f")
    deep: Any = 1
    for _ in range(10):
        deep = [deep]
    with pytest.raises(CheckpointError, match="nested"):
        check_plain(deep, "f")


# ---------------------------------------------------------------------------------------------- gadgets
CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def _gadget_module(folder: Path) -> Path:
    """A module that, if ever imported, creates ``folder/imported``."""
    marker = folder / "imported"
    (folder / "gadget_mod_attn.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "class Gadget:\n    def __init__(self, *a, **k):\n        Path(" + repr(str(marker)) + ").touch()\n",
        encoding="utf-8",
    )
    return marker


def _evil_checkpoint(path: Path, task: str, hparams: dict[str, Any]) -> Path:
    torch.save(
        {
            "state_dict": {},
            "pytorch-lightning_version": "2.6.6",
            "hyper_parameters": hparams,
            "attn_suite": make_metadata(task),
        },
        path,
    )
    return path


_TASKS = {
    "translation": ("tasks.translation.cli", "translation/default.yaml", "attention_options"),
    "captioning": ("tasks.captioning.cli", "captioning/default.yaml", "vocab"),
    "speech": ("tasks.speech.cli", "speech/default.yaml", "attention_options"),
}


@pytest.mark.parametrize("task", sorted(_TASKS))
@pytest.mark.parametrize("variant", ["class_path", "nested", "file_handler", "top_level_class_path"])
def test_ckpt_path_gadgets_never_import_or_instantiate(
    task: str, variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    marker = _gadget_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    module_name, config, dict_option = _TASKS[task]
    gadget = {"class_path": "gadget_mod_attn.Gadget", "init_args": {}}
    hparams: dict[str, Any] = {
        "class_path": {dict_option: gadget},
        "nested": {dict_option: {"a": [{"b": gadget}]}},
        "file_handler": {
            dict_option: {
                "h": {"class_path": "logging.FileHandler", "init_args": {"filename": str(victim), "mode": "w"}}
            }
        },
        # LightningCLI bookkeeping names are skipped unread; the wrong-typed lr then stops the run at parse time.
        "top_level_class_path": {
            "_class_path": "gadget_mod_attn.Gadget",
            "_instantiator": "gadget_mod_attn.Gadget",
            "lr": "fast",
        },
    }[variant]
    ckpt = _evil_checkpoint(tmp_path / "evil.ckpt", task, hparams)
    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(module_name).main
    code = main(
        ["validate", "--config", str(CONFIGS / config), "--ckpt_path", str(ckpt), "--trainer.limit_val_batches", "0"]
    )
    assert not marker.exists(), "a name read from the checkpoint was imported or instantiated"
    assert "gadget_mod_attn" not in sys.modules
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("'lr'" if variant == "top_level_class_path" else "class_path") in err
