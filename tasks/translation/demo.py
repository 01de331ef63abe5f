"""Short end-to-end demo: train on the embedded corpus, checkpoint, reload, translate, plot alignments.

Run it alone with ``python -m tasks.translation.demo OUT_DIR [MAX_MINUTES]``; ``make demo`` runs all tasks.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

DEMO_SENTENCES = [
    "I love you",
    "the red car",
    "she sees them",
    "we didn't see the old dogs yesterday",
    "do you want my new car?",
]


def run_demo(out_dir: Path, max_minutes: float = 2.5, threads: int | None = 1) -> list[Path]:
    """Train a small RNN+additive-attention model briefly and write its outputs into ``out_dir``.

    Args:
        out_dir: destination folder (created).
        max_minutes: wall-clock budget for the whole demo; training gets what setup/plots leave.
        threads: torch intra-op threads while the demo runs (restored afterwards). One thread is the
            fastest choice for this small model when other demos/processes share a 2-core machine;
            ``None`` keeps torch's setting.

    Returns:
        Written files: the checkpoint, ``translations.txt`` and one alignment PNG per demo sentence.
    """
    import torch

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(Path(out_dir), max_minutes)
    finally:
        torch.set_num_threads(old_threads)


def _run(out_dir: Path, max_minutes: float) -> list[Path]:
    import lightning.pytorch as pl

    from core.viz import plot_alignment
    from tasks.translation.data import TranslationDataModule
    from tasks.translation.module import TranslationModule

    start = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0, verbose=False)
    dm = TranslationDataModule(n_pairs=12_000, val_size=200, test_size=200, vocab_size=1200,
                               max_tokens=1024, cache_dir=str(out_dir / "cache"))
    model = TranslationModule(embed_dim=96, hidden_dim=192, lr=4e-3, warmup_steps=50, plot_examples=0)
    # Leave ~30 s (or a third of a tiny budget) for setup, checkpointing, reloading and plotting.
    reserve = min(30.0, max_minutes * 60 / 3)
    train_seconds = max(5.0, max_minutes * 60 - reserve - (time.monotonic() - start))
    trainer = pl.Trainer(
        max_time={"seconds": train_seconds}, max_epochs=1000, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, gradient_clip_val=1.0, use_distributed_sampler=False,
        default_root_dir=str(out_dir))
    trainer.fit(model, dm)
    ckpt = out_dir / "translation.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=True)  # weights + hparams + metadata: small, no optimizer state

    reloaded = TranslationModule.load_from_checkpoint(ckpt)
    results = reloaded.translate(DEMO_SENTENCES, beam=5, return_attention=True)
    written = [ckpt]
    lines = []
    for i, (src, res) in enumerate(zip(DEMO_SENTENCES, results)):
        lines.append(f"{src}\t{res.text}")
        if res.attention is not None:
            png = out_dir / f"translation_alignment_{i}.png"
            fig = plot_alignment(res.attention, res.src_tokens, res.tgt_tokens, path=png, title=f"{src} → {res.text}")
            if "matplotlib.pyplot" in sys.modules:
                sys.modules["matplotlib.pyplot"].close(fig)
            written.append(png)
    txt = out_dir / "translations.txt"
    txt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written.insert(1, txt)
    print(f"translation demo: {trainer.global_step} steps in {time.monotonic() - start:.0f} s")
    for line in lines:
        print("  " + line.replace("\t", "  →  "))
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo_out/translation")
    minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 2.5
    for p in run_demo(out, minutes):
        print(p)
