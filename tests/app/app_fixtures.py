"""Fixtures of the app tests: tiny checkpoints of the three tasks, and the app served on a free port.

Not a conftest.py: the suite's own ``tests/conftest.py`` is imported by name (``from conftest import ...``)
and a second conftest module would shadow it. Test modules import these fixtures explicitly.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from app_tiny_models import tiny_checkpoints


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{task: checkpoint}``, laid out like ``make demo``'s output (``<root>/<task>/<task>.ckpt``)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return tiny_checkpoints(tmp_path_factory.mktemp("app_models"))
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="session")
def models(checkpoints: dict[str, Path]) -> dict[str, Any]:
    """The three tiny models, loaded the way the app loads them."""
    from tasks.app.loading import load_task_model

    return {task: load_task_model(task, path) for task, path in checkpoints.items()}


class ConnectionLog:
    """Records the address of every outgoing socket connection of this process."""

    def __init__(self) -> None:
        self.addresses: list[Any] = []
        self._orig = socket.socket.connect

    def __enter__(self) -> Self:
        log, orig = self, self._orig

        def connect(sock: socket.socket, address: Any) -> Any:
            log.addresses.append(address)
            return orig(sock, address)

        socket.socket.connect = connect  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        socket.socket.connect = self._orig  # type: ignore[method-assign]

    def outside(self) -> list[Any]:
        """Connections to anything but loopback (Unix sockets and loopback addresses are local)."""
        out = []
        for addr in self.addresses:
            if isinstance(addr, tuple) and addr:
                host = str(addr[0])
                try:
                    local = ipaddress.ip_address(host).is_loopback
                except ValueError:
                    local = host == "localhost"
                if not local:
                    out.append(addr)
        return out


@pytest.fixture(scope="session")
def app_server(models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app on the tiny models, on a free port of 127.0.0.1; yields ``{"url", "connections", "limits"}``.

    Every outgoing connection of the test process is logged while the app runs, so a test can check
    that serving pages and requests contacted nothing beyond this machine.
    """
    pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e '.[app]')")
    from tasks.app.app import build_app, launch_app
    from tasks.app.inference import Limits

    limits = Limits(max_upload_mb=2.0, max_audio_seconds=6.0, max_sentences=4)
    with socket.socket() as s:  # a free port: bind to 0, read it, release it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ConnectionLog() as log:
        demo = build_app(models, limits, examples_dir=tmp_path_factory.mktemp("app_examples"))
        url = launch_app(demo, host="127.0.0.1", port=port, limits=limits, block=False)
        try:
            yield {"url": url, "connections": log, "limits": limits, "port": port}
        finally:
            demo.close()
