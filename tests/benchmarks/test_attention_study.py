"""benchmarks/attention_study.py end to end in --quick mode: every task, none against attention, the report."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _study() -> object:
    spec = importlib.util.spec_from_file_location("attention_study", ROOT / "benchmarks" / "attention_study.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["attention_study"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_study_runs_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("espeakng_loader")  # the speech corpus is synthesised
    study = _study()
    out, page, results = tmp_path / "study.json", tmp_path / "report" / "index.html", tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nearlier sections stay\n", encoding="utf-8")
    argv = ["--quick", "--seeds", "0", "--jobs", "2", "--out", str(out), "--html", str(page)]
    assert study.main([*argv, "--results-md", str(results)]) == 0
    data = json.loads(out.read_text())
    runs = {(r["task"], r["mechanism"]) for r in data["runs"]}
    assert runs == {(t, m) for t, ms in study.QUICK_MECHANISMS.items() for m in ms}
    for r in data["runs"]:
        assert r["train_cpu_s"] >= study.QUICK_BUDGET[r["task"]] * 0.5 and r["steps"] > 0
        assert r["params"] > 0 and r["peak_rss_mb"] > 0 and r["decode_per_s"] > 0
        assert study.QUALITY[r["task"]][0] in r["quality"]
        attends = r["mechanism"] not in ("none", "ctc")
        assert bool(r["alignment"]) == attends  # a score only where there is attention to score
        if r["task"] == "translation":
            assert [b["bucket"] for b in r["by_length"]][-1] == "40+"
    text = page.read_text(encoding="utf-8")
    assert "Translation quality by source length" in text and text.count("data:image/") >= 6
    md = results.read_text(encoding="utf-8")
    assert "earlier sections stay" in md and "What attention buys" in md and "| `none` |" in md
    # the page and the table come back from the JSON alone
    again = tmp_path / "again.html"
    assert study.main(["--report", str(out), "--html", str(again)]) == 0
    assert again.read_text(encoding="utf-8").count("data:image/") == text.count("data:image/")
