"""attn-app served on a free port with tiny models: every tab through ``gradio_client`` and plain HTTP,
bad input answered with a message while the server keeps serving, upload limits, no outside traffic,
the ``attn-app`` command line, and one real-browser test (headless Debian Chromium)."""

# The fixtures come from app_fixtures (imported below, see its docstring): test arguments "redefine" them.
# ruff: noqa: F811
from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from app_browser import chromium, missing_browser, outside_requests, requested_urls
from app_fixtures import app_server, checkpoints, models  # noqa: F401  (fixtures)
from app_tiny_models import tone

pytest.importorskip("gradio_client", reason="the app extra is not installed (pip install -e '.[app]')")


@pytest.fixture(scope="module")
def client(app_server: dict[str, Any]) -> Any:
    from gradio_client import Client

    return Client(app_server["url"], verbose=False, download_files=False)


def _figures(gallery: list[dict[str, Any]]) -> list[str]:
    """The image URLs/paths of a Gallery output."""
    return [item["image"].get("url") or item["image"].get("path") for item in gallery]


def test_api_lists_one_endpoint_per_tab(client: Any) -> None:
    api = client.view_api(print_info=False, return_format="dict")
    assert {"/translate", "/caption", "/transcribe"} <= set(api["named_endpoints"])


def test_translate_through_gradio_client(client: Any) -> None:
    text, table, figures, heads = client.predict("the red car\nI love you", 3, 2, api_name="/translate")
    assert len(text.splitlines()) == 2
    assert table["headers"] == ["line", "rank", "translation", "score"] and len(table["data"]) == 4
    assert len(_figures(figures)) == 2 and len(_figures(heads)) == 12
    assert all(u.endswith(".png") for u in _figures(figures))


def test_caption_through_gradio_client(client: Any, tmp_path: Path) -> None:
    from gradio_client import handle_file

    from tasks.app.inference import example_images

    (img,) = example_images(tmp_path, count=1)
    caption, table, overlay, words = client.predict(handle_file(str(img)), 2, 2, api_name="/caption")
    assert caption and table["data"][0][1] == caption and len(table["data"]) == 2
    assert str(overlay.get("url") or overlay.get("path")).endswith(".png") and len(_figures(words)) >= 1


def test_transcribe_through_gradio_client(client: Any, tmp_path: Path) -> None:
    from gradio_client import handle_file

    sf.write(tmp_path / "tone.wav", tone(1.0, 600.0), 16000)
    text, table, figures = client.predict(handle_file(str(tmp_path / "tone.wav")), 2, 2, api_name="/transcribe")
    assert table["data"][0][1] == text and len(_figures(figures)) == 1


@pytest.mark.slow  # eight bad requests, each followed by a good one: ~15 s on 2 cores
def test_bad_input_gives_a_message_and_the_app_goes_on(client: Any, tmp_path: Path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    (tmp_path / "notes.png").write_text("not an image")
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    sf.write(tmp_path / "long.wav", tone(7.0), 16000)
    cases = [
        (("", 2, 1, "/translate"), "no text to translate"),
        (("a\nb\nc\nd\ne", 2, 1, "/translate"), "up to 4 sentences"),
        ((handle_file(str(tmp_path / "notes.png")), 2, 1, "/caption"), "notes.png is not an image"),
        ((None, 2, 1, "/caption"), "no image given"),
        ((handle_file(str(tmp_path / "silent.wav")), 2, 1, "/transcribe"), "silent"),
        ((handle_file(str(tmp_path / "zero.wav")), 2, 1, "/transcribe"), "empty"),
        ((handle_file(str(tmp_path / "long.wav")), 2, 1, "/transcribe"), "accepts up to 6 s"),
        ((handle_file(str(tmp_path / "notes.png")), 2, 1, "/transcribe"), "not audio this app can read"),
    ]
    for (value, beam, nbest, api), message in cases:
        with pytest.raises(AppError, match=message):
            client.predict(value, beam, nbest, api_name=api)
        # the next request is served normally
        assert client.predict("I love you", 1, 1, api_name="/translate")[0] is not None


def _http_json(url: str, payload: dict[str, Any] | None = None) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read().decode()


def test_plain_http_api(app_server: dict[str, Any]) -> None:
    """The README's curl example: POST the inputs, then read the result from the event stream."""
    base = app_server["url"].rstrip("/")
    event = json.loads(_http_json(f"{base}/gradio_api/call/translate", {"data": ["the red car", 2, 2]}))["event_id"]
    stream = _http_json(f"{base}/gradio_api/call/translate/{event}")
    assert "event: complete" in stream
    data = json.loads(stream.split("event: complete\ndata:", 1)[1].strip().splitlines()[0])
    assert isinstance(data[0], str) and len(data[1]["data"]) == 2
    # bad input: the stream ends with an error event carrying the message
    event = json.loads(_http_json(f"{base}/gradio_api/call/translate", {"data": ["  ", 2, 2]}))["event_id"]
    stream = _http_json(f"{base}/gradio_api/call/translate/{event}")
    assert "event: error" in stream and "no text to translate" in stream


def test_oversized_upload_is_refused(app_server: dict[str, Any]) -> None:
    boundary = "attnappboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"\0" * int(2.5 * 2**20)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        f"{app_server['url'].rstrip('/')}/gradio_api/upload",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 413


def test_serving_contacts_nothing_outside(app_server: dict[str, Any], client: Any) -> None:
    client.predict("I love you", 1, 1, api_name="/translate")
    log = app_server["connections"]
    assert log.addresses, "the connection log saw no connection at all (is it hooked?)"
    assert log.outside() == []


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_user_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tasks.app.cli import main

    assert main([]) == 2
    assert "no model given" in capsys.readouterr().err
    assert main(["--speech", str(tmp_path / "missing.ckpt")]) == 2
    assert "missing.ckpt does not exist" in capsys.readouterr().err
    assert main(["--from", str(tmp_path)]) == 2
    assert "make demo" in capsys.readouterr().err


def test_cli_from_demo_output_binds_loopback(checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.app.app as app_module
    from tasks.app.cli import main

    seen: dict[str, Any] = {}

    def fake_launch(demo: Any, host: str, port: int | None, limits: Any, block: bool) -> str:
        seen.update(host=host, port=port, tabs=demo.config["components"], limits=limits)
        return "http://fake"

    monkeypatch.setattr(app_module, "launch_app", fake_launch)
    root = checkpoints["translation"].parents[1]
    assert main(["--from", str(root), "--port", "7999", "--max-audio-seconds", "12"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 7999 and seen["limits"].max_audio_seconds == 12
    labels = {c["props"].get("label") for c in seen["tabs"] if c.get("type") == "tabitem"}
    assert labels == {"Translation", "Captioning", "Speech"}


# ------------------------------------------------------------------------------------------------ browser
@pytest.mark.slow
def test_browser_translates_and_shows_the_heatmap(app_server: dict[str, Any], tmp_path: Path) -> None:
    """Headless Debian Chromium: load the page, submit a sentence, find the translation and the heatmap."""
    why = missing_browser()
    if why:
        pytest.skip(f"browser test skipped: {why}")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("ATTN_APP_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with chromium() as driver:
        driver.get(app_server["url"])
        wait = WebDriverWait(driver, 90)
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#translation-input textarea"))
        box.send_keys("the red car")
        driver.find_element(By.ID, "translation-submit").click()

        def translated(d: Any) -> tuple[str, int] | None:
            text = d.find_element(By.CSS_SELECTOR, "#translation-output textarea").get_attribute("value")
            heatmaps = d.find_elements(By.CSS_SELECTOR, "#translation-alignment img")
            return (text, len(heatmaps)) if text and heatmaps else None

        text, heatmaps = wait.until(translated)
        time.sleep(0.5)  # let the gallery images finish painting before the screenshot
        assert driver.save_screenshot(str(shots / "browser_translation.png"))
        urls = requested_urls(driver)
    assert text.strip() and heatmaps == 1
    assert (shots / "browser_translation.png").stat().st_size > 10_000
    assert any(u.startswith(app_server["url"].rstrip("/")) for u in urls), urls[:20]
    assert outside_requests(urls) == []
