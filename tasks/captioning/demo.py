"""Two-minute captioning demo: train briefly on generated scenes, reload, caption, plot attention.

Used by ``make demo`` (all tasks together within 10 minutes on 2 CPU cores). Everything runs
offline: no downloads, generated images only.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from core.training import DeadlineStop
from tasks.captioning import scenes
from tasks.captioning.data import CaptionDataModule
from tasks.captioning.module import CaptioningModule, save_attention_figure



def run_demo(out_dir: Path, max_minutes: float = 2.5) -> list[Path]:
    """Train on generated scenes for most of ``max_minutes``, then caption a few test scenes.

    Writes into ``out_dir``: ``captioning.ckpt`` (reloaded through the safe loader before use),
    ``captioning_scene<i>.png`` (the input images), ``captioning_attention_<i>.png`` (per-word
    attention overlays) and ``captioning_captions.txt`` (generated vs reference captions).

    Args:
        out_dir: output folder (created).
        max_minutes: total time budget; training gets about 75% of it.

    Returns:
        Paths of the files written.
    """
    start = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(0, workers=True, verbose=False)
    # The default config's model and optimiser (configs/captioning/default.yaml: val BLEU-4 ~63 after
    # 250 steps / ~100 s on 2 CPU cores), without validation so the whole budget trains.
    dm = CaptionDataModule(batch_size=64, train_size=8000, val_size=32, test_size=8, unseen_size=8, num_workers=0)
    model = CaptioningModule(
        vocab=dm.vocab, grid_size=6, encoder_dim=256, attention_options={"hidden_dim": 128}, embed_dim=128, hidden_dim=256,
        dropout=0.2, max_len=24, lr=2e-3, warmup_steps=100, beam_size=1, plot_examples=0,
    )
    train_budget = max_minutes * 60.0 * 0.75
    trainer = L.Trainer(
        max_epochs=100,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=5.0,
        callbacks=[DeadlineStop(start + train_budget)],
    )
    trainer.fit(model, dm)
    ckpt = out_dir / "captioning.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=True)  # weights + hparams + metadata: small, no optimizer state

    # Reload through the safe path (weights_only=True, task check), as a user would.
    model = CaptioningModule.load_from_checkpoint(ckpt)
    written: list[Path] = [ckpt]
    demo_scenes = [scenes.make_scene(0, "test", i) for i in range(3)] + [scenes.make_scene(0, "unseen", 0)]
    results = model.caption([s.image for s in demo_scenes], beam=3, return_attention=True)
    lines = []
    for i, (scene, (text, weights)) in enumerate(zip(demo_scenes, results)):
        img_path = out_dir / f"captioning_scene{i}.png"
        scene.image.save(img_path)
        written.append(img_path)
        if text:
            written.append(save_attention_figure(scene.image, text, weights, out_dir / f"captioning_attention_{i}.png", 96))
        lines.append(f"{img_path.name}\tgenerated: {text}\treference: {scene.captions[0]}")
    txt = out_dir / "captioning_captions.txt"
    txt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written.append(txt)
    return written


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys

    torch.set_num_threads(2)
    for p in run_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out")):
        print(p)
