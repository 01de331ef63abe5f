"""Validation and test of captioning: each image decoded with beam search, BLEU-1..4 / CIDEr-D
(`tasks.captioning.metrics`) over the outputs gathered from every rank, each image scored once, and the per-word
attention overlays of a few fixed validation images.

On the generated scenes corpus, validation and test also log the pointing accuracy of the attention
(`tasks.captioning.alignment`): ``val/pointing`` (and ``_colour`` / ``_shape`` / ``_words``) on the first
`~tasks.captioning.alignment.POINTING_SCENES` validation scenes, ``test/pointing`` and ``unseen/pointing`` on
those of each test set.
"""

from __future__ import annotations

from core.train.distributed import dedupe_by_index, gather_objects
from tasks.captioning.alignment import gold_scenes, pointing_scores
from tasks.captioning.data import Batch
from tasks.captioning.images import denormalize
from tasks.captioning.metrics import caption_scores

__all__ = ["CaptioningEvalMixin", "hyps_and_refs"]


def hyps_and_refs(rows: list[tuple[int, tuple[str, list[str]]]]) -> tuple[list[str], list[list[str]]]:
    """``(hypotheses, references)`` of gathered ``(index, (hypothesis, references))`` rows, each image once."""
    pairs = dedupe_by_index(rows)
    return [h for h, _ in pairs], [r for _, r in pairs]


class CaptioningEvalMixin:
    """Validation/test hooks of :class:`tasks.captioning.module.CaptioningModule` (needs ``_loss``,
    ``_decode_batch``, ``generate``, ``caption_images``, the ``_val_out`` / ``_test_out`` / ``_plot_batch``
    buffers and the ``plot_examples`` / ``beam_size`` / ``mean`` / ``std`` hyper-parameters)."""

    def validation_step(self, batch: Batch | None, batch_idx: int) -> None:
        if batch is None or len(batch) == 0:
            return
        loss, _ = self._loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=True)
        self._val_out += zip(batch.index.tolist(), zip(self._decode_batch(batch), batch.refs))
        if batch_idx == 0 and self._plot_batch is None and self.hparams.plot_examples > 0:
            # The first validation batch is the same every epoch (no shuffling): fixed plot images.
            self._plot_batch = batch.images[: self.hparams.plot_examples].detach().cpu()

    def on_validation_epoch_end(self) -> None:
        hyps, refs = hyps_and_refs(gather_objects(self._val_out))
        self._val_out = []
        if hyps:
            # Every rank holds the gathered lists and computes the same values; sync_dist=True only
            # averages identical numbers (and keeps Lightning's epoch-level DDP check quiet).
            for name, value in caption_scores(hyps, refs).items():
                self.log(f"val/{name}", value, prog_bar=name in ("bleu4", "cider"), sync_dist=True)
        for name, value in self._pointing("val").items():
            self.log(f"val/{name}", value, sync_dist=True)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._log_attention_figures()

    def _log_attention_figures(self) -> None:
        """Per-word attention overlays of the fixed validation images (rank zero only)."""
        if self._plot_batch is None:
            return
        from core.train.callbacks import log_figure
        from core.viz import plot_image_attention

        images = self._plot_batch.to(self.device)
        captions = self.generate(images, beam_size=self.hparams.beam_size)
        pix = denormalize(images, tuple(self.hparams.mean), tuple(self.hparams.std))  # (B, H, W, 3)
        for i, hyps in enumerate(captions):
            best = hyps[0]
            if best.attention is None or not best.words:
                continue
            fig = plot_image_attention(pix[i], best.attention, best.words)
            log_figure(self, f"val_attention/{i}", fig)

    def test_step(self, batch: Batch | None, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch is None or len(batch) == 0:
            return
        self._test_out.setdefault(dataloader_idx, []).extend(
            zip(batch.index.tolist(), zip(self._decode_batch(batch), batch.refs))
        )

    def on_test_epoch_end(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        names = list(getattr(dm, "test_names", [])) if dm is not None else []
        # Every test dataloader, even one this rank got nothing from: gather_objects is a collective.
        for idx in sorted(set(self._test_out) | set(range(len(names)))):
            hyps, refs = hyps_and_refs(gather_objects(self._test_out.get(idx, [])))
            prefix = names[idx] if idx < len(names) else f"test{idx}"
            if hyps:
                for name, value in caption_scores(hyps, refs).items():
                    self.log(f"{prefix}/{name}", value, sync_dist=True, add_dataloader_idx=False)
            # The scenes corpus names its test sets after their splits ("test", "unseen").
            for name, value in self._pointing(prefix).items():
                self.log(f"{prefix}/{name}", value, sync_dist=True, add_dataloader_idx=False)
        self._test_out = {}

    def _pointing(self, split: str) -> dict[str, float]:
        """Pointing scores (`tasks.captioning.alignment.pointing_scores`) on the first scenes of ``split``.

        Empty unless the data module is the generated scenes corpus (only it has object positions). Every
        rank captions the same few dozen scenes with the same weights and gets the same numbers: cheaper than
        sharding them and gathering the maps, and no collective call that one rank could miss. The scenes are
        rendered again each time (about a millisecond each), so they always match the data module in use.
        """
        scenes = gold_scenes(getattr(self.trainer, "datamodule", None), split)
        return pointing_scores(self, scenes, beam=self.hparams.beam_size)
