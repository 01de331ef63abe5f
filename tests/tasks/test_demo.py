"""Tests for the suite-wide demo entry point (tasks/demo.py)."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import pytest

from tasks import demo


def test_auto_threads_leaves_busy_cores_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(demo, "_busy_cores", lambda: 0.2)
    assert demo.auto_threads() == cores
    monkeypatch.setattr(demo, "_busy_cores", lambda: 1.0)
    assert demo.auto_threads() == max(1, cores - 1)
    monkeypatch.setattr(demo, "_busy_cores", lambda: cores + 3.0)
    assert demo.auto_threads() == 1  # never zero


def test_busy_cores_reads_proc_stat() -> None:
    busy = demo._busy_cores(0.05)
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6


@pytest.mark.slow
def test_quick_demo_end_to_end_writes_summary_and_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`attn-demo --quick` (tiny corpora, seconds of training, two tasks side by side) runs every task,
    then writes a well-formed summary.json and index.html. Scores are not checked: quality targets are
    measured by benchmarks/time_to_quality.py, not by timed tests."""
    from tasks.demo_report import TARGETS

    monkeypatch.setenv("ATTN_SUITE_CACHE", str(tmp_path / "cache"))  # the workers synthesise a tiny corpus here
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--quick", "--jobs", "2"]) == 0

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["tasks"]) == set(TARGETS) and summary["jobs"] == 2 and summary["quick"] is True
    for task, rep in summary["tasks"].items():
        assert rep["error"] is None, rep["error"]
        assert [t["metric"] for t in rep["targets"]] == [t.metric for t in TARGETS[task]]
        for t in rep["targets"]:
            assert isinstance(t["score"], float) and t["met"] == (
                t["score"] >= t["value"] if t["op"] == ">=" else t["score"] <= t["value"]
            )
        assert rep["passed"] == all(t["met"] for t in rep["targets"])
        assert rep["train_steps"] > 0 and sum(rep["n_examples"].values()) >= demo.QUICK_HELD_OUT
        assert rep["examples"] and all(isinstance(e["output"], str) and e["references"] for e in rep["examples"])
        for f in rep["files"]:
            assert (out / f).is_file(), f
    assert summary["passed"] == all(r["passed"] for r in summary["tasks"].values())

    page = _Page()
    page.feed((out / "index.html").read_text(encoding="utf-8"))
    page.close()
    assert page.open_tags == [] and {"translation", "captioning", "speech"} <= page.ids
    assert page.media and all((out / src).is_file() for src in page.media), page.media
    kinds = {src.rsplit(".", 1)[1] for src in page.media}
    assert {"png", "wav"} <= kinds  # images, attention figures and the speech inputs
    for task, rep in summary["tasks"].items():  # every shown example of every task is on the page
        assert sum(src.startswith(f"{task}/") for src in page.media) >= len(rep["examples"])


class _Page(HTMLParser):
    """Collects element ids and media sources, and checks that every opened element is closed."""

    VOID: ClassVar[set[str]] = {"meta", "img", "br", "hr", "link", "input", "source"}

    def __init__(self) -> None:
        super().__init__()
        self.open_tags: list[str] = []
        self.ids: set[str] = set()
        self.media: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag in ("img", "audio") and a.get("src"):
            self.media.append(str(a["src"]))
        if tag not in self.VOID:
            self.open_tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open_tags and self.open_tags[-1] == tag, (tag, self.open_tags[-3:])
        self.open_tags.pop()
