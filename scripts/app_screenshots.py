"""Screenshots of each attn-app tab for the README, taken in headless Debian Chromium.

    python scripts/app_screenshots.py --from demo_output --out docs/images     # the demo's models
    python scripts/app_screenshots.py --out /tmp/shots                         # tiny models trained here

Starts the app on a free port, fills each tab as a user would (types sentences, picks the bundled
example image, uploads a recording), waits for the figures and saves ``app_<tab>.png`` (palette PNG,
kept small for the repository).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "app")]

SENTENCES = "the red car is fast\nI love you"
SPEECH_TEXT = "the quick brown fox"


def _speech_sample(path: Path) -> Path:
    """A spoken sentence (eSpeak NG, the speech task's own synthesiser) or, without it, a tone."""
    import numpy as np
    import soundfile as sf

    try:
        from tasks.speech.synth import VoiceSpec, synthesize

        wav, sr = synthesize(SPEECH_TEXT, VoiceSpec("en-us", "", 160))
    except Exception:
        from app_tiny_models import tone

        wav, sr = tone(1.5, 440.0), 16000
    sf.write(path, np.asarray(wav, dtype=np.float32), sr)
    return path


def _shoot(driver: Any, path: Path, height: int) -> None:
    from PIL import Image

    driver.set_window_size(1280, height)
    time.sleep(1.0)  # relayout and image decoding after the resize
    driver.save_screenshot(str(path))
    img = Image.open(path).convert("RGB")
    img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path} ({path.stat().st_size // 1024} KB)")


def _tab(driver: Any, name: str) -> None:
    from selenium.webdriver.common.by import By

    button = next(b for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == name)
    button.click()
    time.sleep(0.5)


def _wait_images(driver: Any, css: str, timeout: float = 180) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"{css} img"))


def take(url: str, out: Path, work: Path) -> list[Path]:
    """Drive the three tabs of the app at ``url``; returns the screenshot paths."""
    from app_browser import chromium, outside_requests, requested_urls
    from selenium.webdriver.common.by import By

    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with chromium() as d:
        d.set_window_size(1280, 1600)
        d.get(url)
        from selenium.webdriver.support.ui import WebDriverWait

        box = WebDriverWait(d, 90).until(lambda d: d.find_element(By.CSS_SELECTOR, "#translation-input textarea"))
        box.send_keys(SENTENCES)
        d.find_element(By.ID, "translation-submit").click()
        _wait_images(d, "#translation-alignment")  # (the heads gallery stays empty for single-head RNN attention)
        shots.append(out / "app_translation.png")
        _shoot(d, shots[-1], 2000)

        _tab(d, "Captioning")
        examples = [
            b
            for b in d.find_elements(By.CSS_SELECTOR, "button")
            if b.find_elements(By.CSS_SELECTOR, "img")
            and "scene" in (b.find_element(By.CSS_SELECTOR, "img").get_attribute("src") or "")
        ]
        examples[0].click()
        time.sleep(1.0)
        d.find_element(By.ID, "captioning-submit").click()
        _wait_images(d, "#captioning-words")
        _wait_images(d, "#captioning-overlay")
        shots.append(out / "app_captioning.png")
        _shoot(d, shots[-1], 2000)

        _tab(d, "Speech")
        upload = d.find_element(By.CSS_SELECTOR, "#speech-input input[type=file]")
        upload.send_keys(str(_speech_sample(work / "speech.wav")))
        time.sleep(2.0)
        d.find_element(By.ID, "speech-submit").click()
        _wait_images(d, "#speech-alignment")
        shots.append(out / "app_speech.png")
        _shoot(d, shots[-1], 1700)
        outside = outside_requests(requested_urls(d))
    if outside:
        raise SystemExit(f"the page requested outside addresses: {outside}")
    return shots


def main(argv: list[str] | None = None) -> int:
    """Serve the app on the chosen models and take the three screenshots."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="from_dir", type=Path, help="models written by `make demo` (default: tiny models)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from tasks.app.app import build_app, launch_app
    from tasks.app.loading import demo_checkpoints, load_task_model

    work = Path(tempfile.mkdtemp(prefix="attn-app-shots-"))
    if args.from_dir:
        paths = demo_checkpoints(args.from_dir)
    else:
        from app_tiny_models import tiny_checkpoints

        paths = tiny_checkpoints(work / "models")
    models = {t: load_task_model(t, path) for t, path in paths.items()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_app(models, examples_dir=work / "examples")
    url = launch_app(demo, port=port, block=False)
    try:
        take(url, args.out, work)
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
