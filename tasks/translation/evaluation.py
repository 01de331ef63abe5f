"""Validation and test of translation: a fixed subset of the sentences decoded with beam search, corpus BLEU and
chrF over the outputs gathered from every rank (each sentence scored once), the alignment error rate of the
attention where the data has gold alignments (the embedded grammar corpus), and the attention heatmaps of a few
fixed validation sentences."""

from __future__ import annotations

import math
from typing import Any

from core.metrics.text import corpus_bleu, corpus_chrf
from core.train.callbacks import log_figure
from core.train.distributed import dedupe_by_index, gather_objects
from tasks.translation.alignment import alignment_scores, has_alignment

__all__ = ["TranslationEvalMixin"]


class TranslationEvalMixin:
    """Validation/test hooks of :class:`tasks.translation.module.TranslationModule` (needs ``_loss``, ``_decode``,
    ``translate``, ``tgt_tokenizer``, the ``_eval_outputs`` buffer and the ``beam_size`` / ``val_bleu_sentences``
    / ``plot_examples`` hyper-parameters)."""

    def _eval_step(self, batch: dict[str, Any], prefix: str, limit: int | None) -> None:
        loss, _ = self._loss(batch)
        self.log(f"{prefix}/loss", loss, prog_bar=True, batch_size=batch["src"].shape[0], sync_dist=True)
        src, lengths, refs = batch["src"], batch["src_lengths"], batch["tgt_text"]
        indices = batch["index"].tolist()
        if limit is not None:
            # Decode a fixed subset (dataset index < limit): batches are length-sorted, so taking the
            # first batches would score only the shortest sentences.
            keep = (batch["index"] < limit).nonzero().squeeze(1)  # (K,)
            if keep.numel() == 0:
                return
            src, lengths = src.index_select(0, keep), lengths.index_select(0, keep)
            refs = [refs[i] for i in keep.tolist()]
            indices = [indices[i] for i in keep.tolist()]
        res = self._decode(src, lengths, beam=self.hparams.beam_size, nbest=1, need_weights=False)
        assert self.tgt_tokenizer is not None
        out = self._eval_outputs.setdefault(prefix, [])
        for index, hyps, ref in zip(indices, res.tokens, refs):
            out.append((index, (self.tgt_tokenizer.decode(hyps[0]), ref)))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.hparams.val_bleu_sentences)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test", None)

    def _finish_eval(self, prefix: str) -> None:
        outputs = self._eval_outputs.pop(prefix, [])
        # BLEU is corpus-level: every rank needs every hypothesis, not an average of rank scores.
        outputs = gather_objects(outputs)
        # Every rank runs the same number of eval steps, so the last batches repeat earlier examples
        # (TokenBucketBatchSampler padding); score each dataset example exactly once.
        pairs = dedupe_by_index(outputs)
        if not pairs:
            return
        hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
        # Same value on every rank (computed from the gathered corpus); sync_dist just averages equal
        # values once per epoch and keeps Lightning's distributed bookkeeping consistent.
        self.log(f"{prefix}/bleu", corpus_bleu(hyps, refs), prog_bar=True, sync_dist=True)
        self.log(f"{prefix}/chrf", corpus_chrf(hyps, refs), sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs.pop("val", None)

    def _log_alignment(self, prefix: str) -> None:
        """``{prefix}/aer`` (and the head and layer scores of multi-head models) on the first gold-aligned pairs
        of the split the data module hands out (``gold_alignments``; none for data without gold alignments).

        Teacher forcing only, one pass per batch of 32 sentences, so it costs a fraction of the beam search
        above. Skipped for ``attention: none`` (nothing to align) and Marian (eager attention in every layer of a
        large pretrained network, for every validation; :func:`tasks.translation.alignment.alignment_scores` scores
        it when asked).
        """
        dm = self.trainer.datamodule
        gold = getattr(dm, "gold_alignments", None)
        if self.trainer.sanity_checking or not callable(gold) or self.hparams.arch == "marian":
            return
        if not has_alignment(self):
            return
        pairs = gold(prefix)  # the split is named like the prefix: "val", "test"
        if not pairs:
            return
        # Every rank scores the same pairs (the same value everywhere; sync_dist averages equal numbers).
        for key, value in alignment_scores(self, pairs).items():
            if math.isfinite(value):
                self.log(f"{prefix}/{key}", value, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")
        self._log_alignment("val")
        if not self.trainer.sanity_checking and self.trainer.is_global_zero:
            self._log_heatmaps()

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")
        self._log_alignment("test")

    def _log_heatmaps(self) -> None:
        from core.viz import plot_alignment

        n = self.hparams.plot_examples
        dm = self.trainer.datamodule
        if n <= 0 or dm is None or not hasattr(dm, "fixed_examples"):
            return
        examples = dm.fixed_examples(n)
        if not examples:
            return
        results = self.translate([s for s, _ in examples], beam=1, return_attention=True)
        for i, (r, (src, _)) in enumerate(zip(results, examples)):
            if r.attention is None:
                continue
            fig = plot_alignment(r.attention, r.src_tokens, r.tgt_tokens, title=f"{src} → {r.text}")
            log_figure(self, f"val/attention_{i}", fig)
