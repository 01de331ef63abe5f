"""Speech demo (~3.5 min on 2 CPU cores): synthesise, train briefly, reload, transcribe, plot alignments.

Used by `make demo` / `attn-demo`. Everything runs offline; the small synthesised corpus is cached,
so later runs skip synthesis and get more training time.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L

from core.training import DeadlineStop

__all__ = ["run_demo"]



def run_demo(out_dir: Path, max_minutes: float = 3.5) -> list[Path]:
    """Train a small joint CTC/attention model on synthesised speech, then transcribe and plot.

    Writes into `out_dir`: `speech.ckpt` (reloaded through the safe loader before use),
    `speech_alignment_<i>.png` (spectrogram with the attention of each output character underneath)
    and `speech_transcripts.txt` (hypothesis vs reference on unseen voices).

    Args:
        out_dir: output folder (created).
        max_minutes: total budget including corpus synthesis (cached after the first run).

    Returns:
        The alignment figure paths.
    """
    from core.viz import plot_spectrogram_alignment
    from tasks.speech.data import SpeechDataModule
    from tasks.speech.module import SpeechModule
    from tasks.speech.text import normalize_text

    start = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(0, verbose=False)
    # Small batches: in a ~2.5 min budget the number of updates, not samples, limits how far the
    # attention gets towards a monotonic alignment.
    dm = SpeechDataModule(synth_train=1200, synth_val=24, synth_test=24, num_workers=1, max_frames=4000,
                          max_batch=24)
    dm.prepare_data()  # synthesis (cached)
    dm.setup("fit")
    model = SpeechModule(encoder_dim=128, encoder_layers=2, hidden_dim=160, embed_dim=32, lr=3e-3,
                         warmup_steps=100, beam_size=3, plot_examples=0, ctc_weight=0.5,
                         attention_options={"hidden_dim": 96, "conv_channels": 8, "kernel_size": 15})
    # Leave ~35 s of the budget for validation, saving, reloading and decoding.
    deadline = start + max(30.0, max_minutes * 60.0 - 35.0)
    trainer = L.Trainer(max_epochs=100, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        gradient_clip_val=5.0, callbacks=[DeadlineStop(deadline)])
    trainer.fit(model, dm)
    ckpt = out_dir / "speech.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=True)  # weights + hparams + metadata: small, no optimizer state
    reloaded = SpeechModule.load_from_checkpoint(ckpt)  # weights_only=True, task check

    utts = dm.splits["test"][:4]  # voices never heard in training
    results = reloaded.transcribe([u.audio for u in utts], beam=3, return_attention=True)
    paths: list[Path] = []
    lines = []
    for i, (u, res) in enumerate(zip(utts, results)):
        ref = normalize_text(u.text)
        lines.append(f"ref: {ref}\nhyp: {res.text}\n")
        for ch in res.chunks[:1]:
            p = out_dir / f"speech_alignment_{i}.png"
            fig = plot_spectrogram_alignment(ch.spec, ch.weights, ch.tokens, path=p, title=f"ref: {ref}")
            import matplotlib.pyplot as plt

            plt.close(fig)
            paths.append(p)
    (out_dir / "speech_transcripts.txt").write_text("\n".join(lines))
    print("".join(lines), flush=True)
    return paths
