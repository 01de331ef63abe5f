"""Checkpoint downloads: an HTML page, a non-checkpoint or an oversized body never lands in the cache.

A local HTTP server on 127.0.0.1 answers with whatever each case needs (type, declared length, body).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from core.errors import CheckpointError
from core.io.checkpoint import load_checkpoint, make_metadata, resolve_checkpoint

# path -> (content type, body, declared length: None = the body's, -1 = none)
ROUTES: dict[str, tuple[str, bytes, int | None]] = {}


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("ATTN_SUITE_CACHE", str(tmp_path / "cache"))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            kind, body, declared = ROUTES[self.path]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            if declared != -1:  # -1: no length at all, the body ends when the connection closes
                self.send_header("Content-Length", str(declared if declared is not None else len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: expected here
                pass

        def log_message(self, fmt: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _cache_files(tmp_path: Path) -> list[str]:
    cache = tmp_path / "cache"
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


def test_an_html_page_is_refused_and_not_cached(server: str, tmp_path: Path) -> None:
    ROUTES["/login.ckpt"] = ("text/html; charset=utf-8", b"<html><body>Sign in</body></html>", None)
    with pytest.raises(CheckpointError, match=r"web page \(text/html\)"):
        resolve_checkpoint(f"{server}/login.ckpt")
    assert _cache_files(tmp_path) == []


def test_a_body_that_is_not_a_checkpoint_is_not_cached(server: str, tmp_path: Path) -> None:
    ROUTES["/junk.ckpt"] = ("application/octet-stream", b"just some bytes, not a checkpoint", None)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        resolve_checkpoint(f"{server}/junk.ckpt")
    assert _cache_files(tmp_path) == []


def test_a_cached_file_that_fails_to_load_is_dropped(server: str, tmp_path: Path) -> None:
    # starts like a zip (so it passes the download's signature check) but is no checkpoint
    ROUTES["/fake.ckpt"] = ("application/octet-stream", b"PK\x03\x04" + b"\x00" * 200, None)
    url = f"{server}/fake.ckpt"
    with pytest.raises(CheckpointError, match="truncated, corrupt or not a PyTorch checkpoint"):
        load_checkpoint(url)
    assert _cache_files(tmp_path) == []  # the next try downloads again instead of reusing it
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "attn_suite": make_metadata("translation")}, good)
    ROUTES["/fake.ckpt"] = ("application/octet-stream", good.read_bytes(), None)
    assert load_checkpoint(url, expected_task="translation")["state_dict"]["w"].sum() == 2


def test_declared_or_streamed_size_beyond_the_limit_is_refused(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ROUTES["/huge.ckpt"] = ("application/octet-stream", b"PK\x03\x04", 50 * 10**9)  # declares 50 GB
    with pytest.raises(CheckpointError, match=r"it is 50\.0 GB, more than the 4\.3 GB allowed"):
        resolve_checkpoint(f"{server}/huge.ckpt")
    monkeypatch.setenv("ATTN_SUITE_MAX_DOWNLOAD_MB", "1")
    body = b"PK\x03\x04" + b"\x00" * (3 << 20)
    ROUTES["/big.ckpt"] = ("application/octet-stream", body, None)  # declares its true 3 MB
    with pytest.raises(CheckpointError, match="ATTN_SUITE_MAX_DOWNLOAD_MB"):
        resolve_checkpoint(f"{server}/big.ckpt")
    ROUTES["/stream.ckpt"] = ("application/octet-stream", body, -1)  # declares no length, streams 3 MB
    with pytest.raises(CheckpointError, match=r"more than 1\.0 MB sent"):
        resolve_checkpoint(f"{server}/stream.ckpt")
    assert _cache_files(tmp_path) == []
