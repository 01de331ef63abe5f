"""Our Transformer on CTranslate2: the network that searches with an export's CTranslate2 model.

CTranslate2 (OpenNMT's C++ engine) runs Transformer encoder–decoders with int8 weights, its own beam search and
little start-up; ``tasks.translation.ct2_spec`` converts our Transformer into its format. Nothing here imports
PyTorch (a translation with CTranslate2 starts in a fraction of a second; ``import torch`` alone takes over a
second): ids go in and come out through the export's vocabularies, and only attention asked for (``--plot``)
becomes a tensor.

What differs from our PyTorch search (the parity tests measure it): PAD and BOS are suppressed on the logits
(CTranslate2 renormalises over the other tokens; we set their log-probabilities to -inf after the softmax), so
scores can differ in the last digits where a model gave those tokens any mass; the kernels differ in rounding, so
near-tied beams may rank differently. Greedy output is identical on every test input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.decoding.result import DecodeResult
from core.engines.folder import EngineFolder, require
from core.engines.search import EngineSearch
from core.errors import CheckpointError, ConfigError, DecodingError
from core.io.jsonio import read_json
from core.text.tokenizers import BaseTokenizer

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["QUANTIZE", "SUBDIR", "CTranslate2Network", "load_ctranslate2", "vocabulary"]

#: weight types an export may hold (CTranslate2's ``quantization``); int8_float16 and float16 need a GPU to run
QUANTIZE = ("float32", "int8", "int8_float32", "int8_float16", "float16", "int16")
SUBDIR = "ctranslate2"  # CTranslate2 writes its own config.json: its model lives in a sub-folder of the export


def vocabulary(tokenizer: BaseTokenizer, side: str) -> list[str]:
    """Token strings by id (CTranslate2 maps strings to ids through them: they must be unique)."""
    tokens = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"the {side} tokenizer has repeated token strings: CTranslate2 needs one string per id")
    return tokens


def _attention(rows: list[list[float]], t: int, s: int) -> Tensor:
    """CTranslate2's attention of one hypothesis as ``(T, S)``: a row per emitted token (EOS excluded), as
    ``beam_search`` returns it, over the ``S`` source tokens (an empty hypothesis has none)."""
    # Imported here: only attention asked for (a plot) needs a tensor; translating text runs without PyTorch.
    import torch

    if not rows:
        return torch.zeros(0, s)
    return torch.tensor(rows, dtype=torch.float32)[:t, :s]  # (T, S)


class CTranslate2Network(EngineSearch):
    """A translation network on CTranslate2: ids in, ids out (through the vocabularies of the export).

    Args:
        translator: the loaded ``ctranslate2.Translator``.
        src_vocab: source token strings by id.
        tgt_vocab: target token strings by id.
    """

    engine = "ctranslate2"

    def __init__(self, translator: Any, src_vocab: list[str], tgt_vocab: list[str]) -> None:
        self.translator = translator
        self.src_vocab = src_vocab
        self.tgt_ids = {tok: i for i, tok in enumerate(tgt_vocab)}
        self.tgt_vocab = tgt_vocab

    def search(
        self,
        sources: list[list[int]],
        beam: int,
        nbest: int,
        need_weights: bool,
        max_len: int,
        length_penalty: float,
        suppress: tuple[int, ...],
    ) -> DecodeResult:
        """See :meth:`core.engines.search.EngineSearch.search`; CTranslate2 decodes the batch in one call."""
        batch = [[self.src_vocab[i] for i in ids] for ids in sources]
        results = self.translator.translate_batch(
            batch,
            beam_size=beam,
            num_hypotheses=nbest,
            length_penalty=length_penalty,
            max_decoding_length=max_len,
            min_decoding_length=0,  # CTranslate2 forbids EOS at the first step by default; we allow it
            return_scores=True,
            return_attention=need_weights,
            return_end_token=False,
            suppress_sequences=[[self.tgt_vocab[i]] for i in suppress],
            # CTranslate2 4.8.5's batched beam search returns another sentence's attention for the first
            # token (greedy and single sentences are right; tests/tasks/test_translation_ct2.py checks it against
            # teacher forcing): with attention asked for, each sentence is searched on its own
            max_batch_size=1 if need_weights and beam > 1 else 0,
        )
        out = DecodeResult()
        for ids, res in zip(sources, results):
            if not res.hypotheses:
                raise DecodingError("CTranslate2 returned no hypothesis (non-finite scores?)")
            out.tokens.append([[self.tgt_ids[t] for t in hyp] for hyp in res.hypotheses])
            out.scores.append([float(s) for s in res.scores])
            if need_weights:
                out.attention.append([_attention(a, len(h), len(ids)) for a, h in zip(res.attention, res.hypotheses)])
            else:
                out.attention.append([None] * len(res.hypotheses))
        return out


def load_ctranslate2(
    folder: EngineFolder,
    src: BaseTokenizer,
    tgt: BaseTokenizer,
    device: str = "cpu",
    threads: int | None = None,
) -> CTranslate2Network:
    """The export's CTranslate2 model, checked against its tokenizers.

    Args:
        folder: the export, read by ``core.engines.folder.read_engine_folder``.
        src: its source tokenizer.
        tgt: its target tokenizer.
        device: ``"cpu"`` or ``"cuda"``.
        threads: CPU threads per translation (None: CTranslate2's default, 4 or the cores).

    Raises:
        ConfigError: CTranslate2 is not installed.
        CheckpointError: the model is missing or unreadable, or its vocabularies are not the tokenizers' (each
            names the folder).
    """
    ctranslate2 = require("ctranslate2", "translating with a CTranslate2 export")
    model_dir = folder.path / SUBDIR
    if not (model_dir / "model.bin").is_file():
        raise CheckpointError(f"{folder.source}: {SUBDIR}/model.bin is missing (not a complete CTranslate2 export)")
    src_vocab, tgt_vocab = vocabulary(src, "source"), vocabulary(tgt, "target")
    try:
        stored = ctranslate2.contains_model(str(model_dir))
        translator = ctranslate2.Translator(
            str(model_dir), device=device, compute_type="default", intra_threads=threads or 0
        )
    except (RuntimeError, ValueError, OSError) as err:
        raise CheckpointError(f"{folder.source}: CTranslate2 cannot load {SUBDIR}/ ({err})") from None
    if not stored:
        raise CheckpointError(f"{folder.source}: {SUBDIR}/ holds no CTranslate2 model")
    for side, vocab in (("source", src_vocab), ("target", tgt_vocab)):
        names = (f"{side}_vocabulary.json", "shared_vocabulary.json")
        path = next((model_dir / n for n in names if (model_dir / n).is_file()), None)
        if path is None:
            raise CheckpointError(f"{folder.source}: {SUBDIR}/ has no {side} vocabulary")
        if read_json(path, f"{folder.source}: {SUBDIR}/{path.name}") != vocab:
            raise CheckpointError(
                f"{folder.source}: {SUBDIR}/{path.name} is not the vocabulary of the export's {side} tokenizer "
                f"(files from different exports?)"
            )
    return CTranslate2Network(translator, src_vocab, tgt_vocab)
