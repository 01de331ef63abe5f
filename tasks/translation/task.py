"""The translation task's parts for the core module (:class:`TranslationTask`): networks picked by name, the
label-smoothed cross-entropy, beam-search BLEU/chrF, the alignment error of the attention on gold links, heatmaps,
and what a checkpoint stores besides the weights (tokenizers, training words; Marian's config and tokenizer files).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure
from torch import nn

from core.cli.output import Prediction
from core.errors import ConfigError
from core.metrics.text import corpus_bleu, corpus_chrf
from core.text.known_words import KnownWords
from core.text.tokenizers import BaseTokenizer
from core.train.task import EvalStage, Evaluation, Objective, Stage, Task
from core.viz import plot_alignment
from tasks.translation.alignment import alignment_scores, has_alignment
from tasks.translation.inference import Translator
from tasks.translation.marian_tokenizer import marian_tokenizers
from tasks.translation.models import RNNSeq2Seq, TransformerSeq2Seq
from tasks.translation.models.marian import MarianSeq2Seq, load_marian
from tasks.translation.networks import build_network
from tasks.translation.options import TranslationOptions
from tasks.translation.stored import read_artifacts, write_artifacts

Batch = dict[str, Any]
__all__ = ["TranslationNetwork", "TranslationTask"]
TranslationNetwork = RNNSeq2Seq | TransformerSeq2Seq | MarianSeq2Seq


class TranslationTask(Task[TranslationNetwork, Batch]):
    """Cross-entropy with label smoothing; beam-search BLEU/chrF; alignment error of the attention on gold links.

    Holds what the network is built from and what a checkpoint stores besides the weights: the tokenizers, the
    training sources' words and, for Marian, its config and tokenizer files.

    Args:
        options: the module's options.
    """

    unit = "tok"  # source + target tokens, padding excluded

    def __init__(self, options: TranslationOptions) -> None:
        self.options = options
        self.src_tokenizer: BaseTokenizer | None = None
        self.tgt_tokenizer: BaseTokenizer | None = None
        self.known_words: KnownWords | None = None  # the training sources' words (core.text.known_words)
        self.pretrained_info: dict[str, Any] | None = None  # marian: {"source", "model_type", "config"}
        self.hf_tokenizer_files: dict[str, bytes] | None = None  # marian: its tokenizer files
        self._backbone: nn.Module | None = None  # marian: the loaded pretrained model, used by the first build

    # ------------------------------------------------------------------ building
    def init_marian(self, pretrained: str | None, stored: dict[str, Any] | None) -> None:
        """``arch=marian``: from a checkpoint's stored config (offline; tokenizers come with its metadata), or
        the pretrained model and its tokenizer read from ``pretrained`` (a hub id, downloaded once, or a folder)."""
        if stored is not None:
            self.pretrained_info = dict(stored)
            return
        self._backbone, self.hf_tokenizer_files, self.pretrained_info = load_marian(pretrained)
        self.set_tokenizers(*marian_tokenizers(self.hf_tokenizer_files, f"--model.pretrained={pretrained}"))

    def set_tokenizers(self, src: BaseTokenizer, tgt: BaseTokenizer) -> None:
        """Attach the tokenizers (vocabulary sizes decide the embedding shapes)."""
        self.src_tokenizer, self.tgt_tokenizer = src, tgt

    def ready(self) -> bool:
        return self.src_tokenizer is not None and self.tgt_tokenizer is not None

    def build_network(self) -> TranslationNetwork:
        o = self.options
        if self.src_tokenizer is None or self.tgt_tokenizer is None:
            if o.arch == "marian":
                raise ConfigError(
                    "--model.pretrained_config is filled from checkpoints; to start from a pretrained "
                    "Marian model give --model.pretrained (or --ckpt_path for its checkpoint)"
                )
            raise ConfigError(
                "TranslationModule needs tokenizers: a data module with src_tokenizer/tgt_tokenizer "
                "(e.g. tasks.translation.data.TranslationDataModule), or set_tokenizers() in Python"
            )
        backbone, self._backbone = self._backbone, None
        return build_network(
            o, self.src_tokenizer.vocab_size, self.tgt_tokenizer.vocab_size, self.pretrained_info, backbone
        )

    def translator(self, network: TranslationNetwork) -> Translator:
        """The network with the tokenizers and decoding limits (what ``translate`` runs)."""
        assert self.src_tokenizer is not None and self.tgt_tokenizer is not None
        return Translator.for_options(network, self.options, self.src_tokenizer, self.tgt_tokenizer, self.known_words)

    def setup(self, stage: str, datamodule: Any | None) -> bool:
        """Take the data module's tokenizers (or impose ours on it) and its training words."""
        dm = datamodule
        if self.options.arch == "marian" and self.src_tokenizer is None:
            # Rebuilt from a checkpoint's config (--ckpt_path): its tokenizers (never the data module's) arrive
            # with the checkpoint's metadata when Lightning restores it; restore() has the network rebuilt.
            return False
        rebuild = False
        if self.src_tokenizer is None:
            src, tgt = getattr(dm, "src_tokenizer", None), getattr(dm, "tgt_tokenizer", None)
            if src is None or tgt is None:
                raise ConfigError(
                    "TranslationModule needs a data module with src_tokenizer/tgt_tokenizer "
                    "(e.g. tasks.translation.data.TranslationDataModule)"
                )
            self.set_tokenizers(src, tgt)
            rebuild = True
        elif dm is not None and callable(getattr(dm, "set_tokenizers", None)):
            # A model that already has tokenizers (loaded checkpoint) imposes them on the data.
            assert self.tgt_tokenizer is not None
            if dm.src_tokenizer is None or dm.src_tokenizer.to_dict() != self.src_tokenizer.to_dict():
                dm.set_tokenizers(self.src_tokenizer, self.tgt_tokenizer)
                dm.datasets.clear()
                dm.setup(stage)
        known_source_words = getattr(dm, "known_source_words", None)
        if stage == "fit" and callable(known_source_words):
            # a model trained further on new data knows the words of both
            new = known_source_words()
            self.known_words = new if self.known_words is None else KnownWords(self.known_words.words | new.words)
        return rebuild

    # ------------------------------------------------------------------ training and evaluation
    def objective(self, network: TranslationNetwork, batch: Batch, stage: Stage) -> Objective:
        host = batch.get("src_lengths_host")
        src = batch["src"]
        # Whether any source is padded, decided in Python (no tensor check, nothing for torch.compile to break
        # on); the RNN also packs padded batches from the host lengths.
        unpadded = host is not None and all(n == src.shape[1] for n in host)
        if isinstance(network, RNNSeq2Seq):
            lengths = None if host is None else torch.tensor(host, dtype=torch.long)  # (B,)
            logits, _ = network(src, batch["src_lengths"], batch["tgt_in"], host_lengths=lengths, unpadded=unpadded)
        else:
            logits, _ = network(src, batch["src_lengths"], batch["tgt_in"], unpadded=unpadded)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),  # (B*T, V)
            batch["tgt_out"].reshape(-1),  # (B*T,)
            ignore_index=0,
            label_smoothing=self.options.label_smoothing,
        )
        out = Objective(loss, size=src.shape[0])
        if stage == "train":
            # source + target tokens, unpadded: the throughput numerator of the benchmarks
            out.counts["tokens"] = ((batch["tgt_out"] != 0).sum() + batch["src_lengths"].sum()).float()
        return out

    def evaluate(self, network: TranslationNetwork, batch: Batch, stage: EvalStage) -> Evaluation | None:
        """Beam-search translations of the batch (for validation only its sentences with dataset index below
        ``val_bleu_sentences``: batches are length-sorted, so the first batches would be the shortest)."""
        src, lengths, refs = batch["src"], batch["src_lengths"], batch["tgt_text"]
        indices = batch["index"].tolist()
        limit = self.options.val_bleu_sentences if stage == "val" else None
        if limit is not None:
            keep = (batch["index"] < limit).nonzero().squeeze(1)  # (K,)
            if keep.numel() == 0:
                return None
            src, lengths = src.index_select(0, keep), lengths.index_select(0, keep)
            refs = [refs[i] for i in keep.tolist()]
            indices = [indices[i] for i in keep.tolist()]
        res = self.translator(network).decode(src, lengths, self.options.beam_size, nbest=1, need_weights=False)
        assert self.tgt_tokenizer is not None
        return Evaluation(indices, [self.tgt_tokenizer.decode(h[0]) for h in res.tokens], [[r] for r in refs])

    def score(self, hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
        refs = [r[0] for r in references]
        return {"bleu": corpus_bleu(hypotheses, refs), "chrf": corpus_chrf(hypotheses, refs)}

    def epoch_scores(self, network: TranslationNetwork, datamodule: Any | None, stage: EvalStage) -> dict[str, float]:
        """``aer`` (and the head and layer scores of multi-head models) on the first gold-aligned pairs of the
        split the data module hands out (``gold_alignments``; none for data without gold alignments).

        Teacher forcing only, one pass per batch of 32 sentences, so it costs a fraction of the beam search.
        Skipped for ``attention: none`` (nothing to align) and Marian (eager attention in every layer of a large
        pretrained network, for every validation; :func:`tasks.translation.alignment.alignment_scores` scores it
        when asked). Every rank scores the same pairs.
        """
        gold = getattr(datamodule, "gold_alignments", None)
        if not callable(gold) or self.options.arch == "marian":
            return {}
        translator = self.translator(network)
        if not has_alignment(translator):
            return {}
        pairs = gold(stage)  # the split is named like the stage: "val", "test"
        if not pairs:
            return {}
        return {k: v for k, v in alignment_scores(translator, pairs).items() if math.isfinite(v)}

    def figures(self, network: TranslationNetwork, datamodule: Any | None) -> list[tuple[str, Figure]]:
        """Attention heatmaps of the data module's first ``plot_examples`` validation sentences (greedy)."""
        n = self.options.plot_examples
        fixed_examples = getattr(datamodule, "fixed_examples", None)
        if n <= 0 or not callable(fixed_examples):
            return []
        examples = fixed_examples(n)
        if not examples:
            return []
        results = self.translator(network).translate([s for s, _ in examples], beam=1, return_attention=True)
        return [
            (f"val/attention_{i}", plot_alignment(r.attention, r.src_tokens, r.tgt_tokens, title=f"{src} → {r.text}"))
            for i, (r, (src, _)) in enumerate(zip(results, examples))
            if r.attention is not None
        ]

    def predict(
        self, network: TranslationNetwork, batch: Batch, datamodule: Any, dataloader_idx: int
    ) -> list[Prediction]:
        """One ``(dataset index, (translation,))`` row per input line (beam ``beam_size``); an empty input
        line gets an empty output line, so output line i always translates input line i."""
        res = self.translator(network).decode(
            batch["src"], batch["src_lengths"], self.options.beam_size, nbest=1, need_weights=False
        )
        assert self.tgt_tokenizer is not None
        return [
            Prediction(int(i), ("" if not src.strip() else self.tgt_tokenizer.decode(h[0]),))
            for i, h, src in zip(batch["index"].tolist(), res.tokens, batch["src_text"])
        ]

    def batch_units(self, batch: Batch) -> float:
        """Tokens of a host batch: source lengths plus non-padding targets."""
        return float(sum(batch["src_lengths_host"]) + int((batch["tgt_out"] != 0).sum()))

    # ------------------------------------------------------------------ what a checkpoint stores
    def artifacts(self) -> dict[str, Any]:
        assert self.src_tokenizer is not None and self.tgt_tokenizer is not None
        return write_artifacts(
            self.src_tokenizer, self.tgt_tokenizer, self.known_words, self.pretrained_info, self.hf_tokenizer_files
        )

    def restore(self, artifacts: Mapping[str, Any], source: str) -> bool:
        """Take the file's tokenizers; True when they differ from ours (the network is then rebuilt for them, and
        during ``--ckpt_path`` restores the data module re-tokenizes its data with them)."""
        stored = read_artifacts(artifacts, source, self.src_tokenizer, self.tgt_tokenizer)
        if stored.known_words is not None:  # absent in models written before it, and in Marian fine-tunes
            self.known_words = stored.known_words
        if stored.tokenizers is None:  # the same tokenizers as ours
            return False
        if stored.hf_tokenizer_files is not None:
            self.hf_tokenizer_files = stored.hf_tokenizer_files
        if self.src_tokenizer is not None:
            rank_zero_warn("the checkpoint's tokenizers differ from the data module's; using the checkpoint's")
        self.set_tokenizers(*stored.tokenizers)
        return True
