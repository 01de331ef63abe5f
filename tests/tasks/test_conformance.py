"""Every registered task honours the same contract (``tasks.registry``): a seconds-long ``fit`` from its shipped
configs, ``export`` to a model folder, reload from the folder, and ``predict`` from the checkpoint and from the
folder with identical output. A new task gets this test by registering."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.train.module import TaskModule
from tasks.registry import REGISTRY, RegisteredTask

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("task", REGISTRY.values(), ids=lambda t: t.name)
def test_fit_export_reload_predict(task: RegisteredTask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the smoke arguments name configs relative to the repository
    main = task.main()
    run = [*task.smoke, "--trainer.default_root_dir", str(tmp_path / "run")]
    assert main(["fit", *run, "--trainer.enable_progress_bar", "false"]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    folder = tmp_path / "model"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(folder)]) == 0

    cls = task.module_class()
    assert issubclass(cls, TaskModule) and cls.TASK == task.name
    model = cls.from_pretrained(folder)
    assert isinstance(model, cls) and model.model is not None

    outputs = {}
    for name, source in (("checkpoint", ckpt), ("folder", folder)):
        out = tmp_path / f"{name}.txt"
        args = ["predict", *run, "--ckpt_path", str(source), "--predict_output", str(out)]
        assert main([*args, "--trainer.limit_predict_batches", "2"]) == 0
        outputs[name] = out.read_text(encoding="utf-8")
    assert outputs["checkpoint"].strip(), "predict wrote nothing"
    assert outputs["folder"] == outputs["checkpoint"]
