"""The one prediction writer: input order, each example once, rank 0 writes, fields escaped, atomic files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from core.cli.output import Prediction, escape_field, format_line, write_text_atomic
from core.cli.predict import PredictionWriter


def test_rows_sorted_deduped_per_dataloader_and_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trainer = SimpleNamespace(is_global_zero=True)
    out = tmp_path / "sub" / "preds.tsv"
    w = PredictionWriter(str(out))
    w.on_predict_epoch_start(trainer, None)  # type: ignore[arg-type]
    # batches out of order (as from two interleaved DDP ranks) with one padding repeat, two dataloaders
    w.write_on_batch_end(
        trainer,
        None,
        [Prediction(2, ("c", "two")), Prediction(0, ("a", "zero"))],  # type: ignore[arg-type]
        None,
        None,
        0,
        0,
    )
    w.write_on_batch_end(trainer, None, [Prediction(0, ("x", "other loader"))], None, None, 0, 1)  # type: ignore[arg-type]
    w.write_on_batch_end(
        trainer,
        None,
        [Prediction(1, ("b\tname", "one\nline")), Prediction(0, ("a", "zero"))],  # type: ignore[arg-type]
        None,
        None,
        1,
        0,
    )
    w.write_on_batch_end(trainer, None, [], None, None, 2, 0)  # type: ignore[arg-type]  # an all-unreadable batch
    w.on_predict_epoch_end(trainer, None)  # type: ignore[arg-type]
    assert out.read_text(encoding="utf-8").splitlines() == [
        "a\tzero",
        "b\\tname\tone\\nline",
        "c\ttwo",
        "x\tother loader",
    ]
    assert not list(out.parent.glob(".*part"))  # the temporary file was renamed, nothing left behind
    # stdout without a file; a rank other than 0 writes nothing
    w = PredictionWriter()
    w.write_on_batch_end(trainer, None, [Prediction(5, ("x",))], None, None, 0, 0)  # type: ignore[arg-type]
    w.on_predict_epoch_end(trainer, None)  # type: ignore[arg-type]
    w.write_on_batch_end(trainer, None, [Prediction(6, ("y",))], None, None, 0, 0)  # type: ignore[arg-type]
    w.on_predict_epoch_end(SimpleNamespace(is_global_zero=False), None)  # type: ignore[arg-type]
    assert capsys.readouterr().out == "x\n"


def test_under_ddp_every_rank_gathers_and_rank_zero_writes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = 2
    writers = [PredictionWriter(str(tmp_path / "out.txt")) for _ in range(world)]
    shards = [[0, 2, 4], [1, 3, 0]]  # DistributedSampler padding: rank 1 repeats example 0
    for w, shard in zip(writers, shards):
        w.write_on_batch_end(None, None, [Prediction(i, (f"t{i}",)) for i in shard], None, None, 0, 0)  # type: ignore[arg-type]
    parts = [w._rows for w in writers]
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: world)
    monkeypatch.setattr(torch.distributed, "all_gather_object", lambda dst, obj: dst.__setitem__(slice(None), parts))
    for rank in (1, 0):
        writers[rank].on_predict_epoch_end(SimpleNamespace(is_global_zero=rank == 0), None)  # type: ignore[arg-type]
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines() == [f"t{i}" for i in range(5)]


def test_escaping_and_atomic_text() -> None:
    assert escape_field("a\tb\nc\\d\re") == "a\\tb\\nc\\\\d\\re"
    assert format_line(["x", "y\tz"]) == "x\ty\\tz"


def test_write_text_atomic_replaces_in_one_step(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.txt"
    write_text_atomic(path, "one\n")
    write_text_atomic(path, "two\n")
    assert path.read_text(encoding="utf-8") == "two\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.txt"]
