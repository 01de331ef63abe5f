"""Translation with a trained network: :class:`Translator` (network + tokenizers, no Lightning) and its results.

``TranslationModule.translate`` is a :class:`Translator` over the module's network; so are the CLI, the app,
the alignment scores and the per-head views. Nothing here imports Lightning or the training stack:
:meth:`Translator.from_pretrained` loads a model folder, ``.ckpt`` or ``hf://`` model without them (through the
same checks as ``TranslationModule.from_pretrained``, ``core.io.rebuild``), and translates exactly as it does.

Nor does this module import PyTorch when it is loaded: an export on CTranslate2 (``attn-translate export --format
ctranslate2``) is read and run without it, and starts in a fraction of a second (``import torch`` alone takes
over one). PyTorch comes in where a PyTorch or ONNX Runtime network is loaded or searched (``loading``,
``decode``), and for attention asked of CTranslate2.

Example:
    >>> translator = Translator.from_pretrained("demo_output/translation/model")  # doctest: +SKIP
    >>> translator.translate("I love you")                                         # doctest: +SKIP
    'te quiero'
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.decoding.result import DecodeResult
from core.engines.folder import read_engine_folder
from core.engines.search import EngineSearch
from core.errors import ConfigError
from core.io.folder_files import HUB_PREFIX, folder_engine, resolve_hub
from core.text.known_words import KnownWords
from core.text.tokenizers import BOS_ID, EOS_ID, PAD_ID, BaseTokenizer
from tasks.translation.ct2 import load_ctranslate2
from tasks.translation.options import TranslationFiles, TranslationOptions, checked_options
from tasks.translation.stored import read_artifacts

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from tasks.translation.networks import Seq2SeqNetwork

__all__ = ["ENGINES", "Translation", "Translator"]


ENGINES = ("ctranslate2", "onnxruntime")  # the engines an export may run on (``attn-translate export --format``)


@dataclass
class Translation:
    """One hypothesis with its alignment.

    Attributes:
        text: detokenized translation.
        score: length-normalised log-probability.
        src_tokens: source subword strings (S).
        tgt_tokens: output subword strings (T).
        attention: (T, S) weights used to emit each output token, or None.
    """

    text: str
    score: float
    src_tokens: list[str]
    tgt_tokens: list[str]
    attention: Tensor | None


@dataclass
class Translator:
    """A translation network with its tokenizers and decoding limits.

    Attributes:
        network: the network: any of ``tasks.translation.models`` (an ``nn.Module``), an ONNX Runtime network
            (``tasks.translation.onnx_graphs``) or a CTranslate2 one (``tasks.translation.ct2``).
        src_tokenizer: source tokenizer.
        tgt_tokenizer: target tokenizer.
        max_len: cap on output tokens (also ``2 * source length + 10``).
        max_source_tokens: longer inputs are truncated (with a warning).
        length_penalty: beam-search length normalisation exponent.
        known_words: the training sources' words, when known (names the words a translation guesses).
        attention: the RNN decoder's mechanism (``none``: its weights are a uniform average that says nothing
            about the input), or None for networks that always attend with multi-head attention.
        multihead: whether the cross-attention has several heads (alignment scores then rank them).
    """

    network: nn.Module | EngineSearch
    src_tokenizer: BaseTokenizer
    tgt_tokenizer: BaseTokenizer
    max_len: int = 100
    max_source_tokens: int = 100
    length_penalty: float = 1.0
    known_words: KnownWords | None = None
    attention: str | None = None
    multihead: bool = False

    @classmethod
    def for_options(
        cls,
        network: nn.Module | EngineSearch,
        options: TranslationOptions,
        src_tokenizer: BaseTokenizer,
        tgt_tokenizer: BaseTokenizer,
        known_words: KnownWords | None = None,
    ) -> Translator:
        """``network`` with the tokenizers and the decoding limits of ``options`` (what ``translate`` runs)."""
        o = options
        return cls(
            network,
            src_tokenizer,
            tgt_tokenizer,
            max_len=o.max_len,
            max_source_tokens=o.max_source_tokens,
            length_penalty=o.length_penalty,
            known_words=known_words,
            attention=None if o.arch != "rnn" else o.attention,
            multihead=o.arch != "rnn" or o.attention == "multihead",
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        map_location: str | torch.device | None = "cpu",
        strict: bool = True,
        sha256: str | None = None,
        threads: int | None = None,
        **overrides: Any,
    ) -> Translator:
        """A translation model folder, ``hf://ORG/NAME[@REVISION]``, ``.ckpt`` file or URL, loaded without Lightning;
        or an engine export (``attn-translate export --format ctranslate2|onnx``), run on its engine.

        The same safe path as ``TranslationModule.from_pretrained`` (``core.io.rebuild``): no unpickling, the
        hyper-parameters validated against :class:`~tasks.translation.options.TranslationOptions` with the
        module's bounds and old names, old weights upgraded, shapes and dtypes checked on the ``meta`` device
        before anything is allocated, non-finite weights refused. Translations are identical to the module's.

        Args:
            path: the model.
            map_location: device of the network (None keeps CPU; an ONNX export runs on the CPU).
            strict: exact state-dict match.
            sha256: expected digest (or prefix) of the file (a folder's weights).
            threads: an engine export's CPU threads (None: the engine's default); PyTorch uses
                ``torch.set_num_threads``.
            **overrides: options to change (e.g. ``max_len=50``), fields of ``TranslationOptions``.

        Raises:
            core.errors.CheckpointError: an unreadable, unsafe or other-task file, bad hyper-parameters, or
                weights that do not fit (the message names the file).
            core.errors.ConfigError: an engine export whose engine is not installed, or an unknown override.
        """
        local = resolve_hub(os.fspath(path)) if os.fspath(path).startswith(HUB_PREFIX) else Path(path).expanduser()
        if folder_engine(local) is not None:
            if sha256 is not None:
                raise ConfigError("sha256 pins a checkpoint or a model folder's weights; an engine export has none")
            return cls._from_engine(local, map_location, threads, overrides)
        from tasks.translation.loading import load_translation  # PyTorch: a network with its weights

        loaded = load_translation(path, map_location, strict, sha256, overrides)
        return cls.for_options(loaded.network, loaded.options, *loaded.tokenizers, loaded.known_words)

    @classmethod
    def _from_engine(
        cls, path: Path, map_location: str | torch.device | None, threads: int | None, overrides: dict[str, Any]
    ) -> Translator:
        """An engine export: its options and tokenizers checked, its network on CTranslate2 or ONNX Runtime."""
        folder = read_engine_folder(TranslationFiles, path, TranslationOptions, ENGINES)
        options = checked_options(folder.hparams, overrides, folder.source)
        artifacts = read_artifacts(folder.meta, folder.source, None, None)
        assert artifacts.tokenizers is not None  # no current tokenizers: always read
        src, tgt = artifacts.tokenizers
        device = "cpu" if map_location is None else str(map_location)
        network: nn.Module | EngineSearch
        if folder.engine == "ctranslate2":
            network = load_ctranslate2(folder, src, tgt, "cuda" if device.startswith("cuda") else device, threads)
        else:
            if device != "cpu":
                raise ConfigError(f"{folder.source}: the ONNX export runs on the CPU (map_location={device!r})")
            from tasks.translation.onnx_graphs import load_onnx  # PyTorch drives its graphs (core.decoding)

            network = load_onnx(folder, options, threads)
        return cls.for_options(network, options, src, tgt, artifacts.known_words)

    @property
    def device(self) -> torch.device:
        """Where a PyTorch network's weights are (the CPU for an ONNX Runtime network, which has none)."""
        import torch

        if isinstance(self.network, EngineSearch):
            raise TypeError(f"a {self.network.engine} network has no PyTorch device")
        weight = next(self.network.parameters(), None)
        return torch.device("cpu") if weight is None else weight.device

    @property
    def engine(self) -> str:
        """What runs the network: ``"pytorch"``, ``"ctranslate2"`` or ``"onnxruntime"`` (an engine's network
        names its engine)."""
        return str(getattr(self.network, "engine", "pytorch"))

    def decode(self, src: Tensor, src_lengths: Tensor, beam: int, nbest: int, need_weights: bool) -> DecodeResult:
        """Beam search of a PyTorch or ONNX Runtime network over a padded batch ``src (B, S)``, ``src_lengths (B,)``
        (``core.decoding.beam``, without gradients)."""
        import torch

        from core.decoding.beam import DecoderState, beam_search

        if isinstance(self.network, EngineSearch):
            raise TypeError(f"a {self.network.engine} network searches whole sequences itself: call translate()")
        net: Seq2SeqNetwork = self.network  # type: ignore[assignment]  # nn.Module's __call__ is untyped
        with torch.no_grad():
            state = net.init_state(src, src_lengths)

            def step_fn(last: Tensor, st: DecoderState) -> tuple[Tensor, DecoderState, Tensor | None]:
                return net.step(last, st, need_weights)

            return beam_search(
                step_fn,
                state,
                batch_size=src.shape[0],
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                max_len=self.max_len_for(int(src_lengths.max())),
                beam_size=beam,
                length_penalty=self.length_penalty,
                nbest=nbest,
                suppress=(PAD_ID, BOS_ID),
                device=src.device,
            )

    def max_len_for(self, longest: int) -> int:
        """The most output tokens for a batch whose longest source has ``longest`` tokens."""
        return min(self.max_len, longest * 2 + 10)

    def search(self, sources: list[list[int]], beam: int, nbest: int, need_weights: bool) -> DecodeResult:
        """Beam search over a batch of source ids, on whatever runs the network.

        An empty source is one PAD token on every engine (as ``pad_ids`` makes it for a PyTorch network).
        """
        sources = [ids or [PAD_ID] for ids in sources]
        if isinstance(self.network, EngineSearch):  # CTranslate2: the engine runs the search itself
            longest = max(len(ids) for ids in sources)
            return self.network.search(
                sources, beam, nbest, need_weights, self.max_len_for(longest), self.length_penalty, (PAD_ID, BOS_ID)
            )
        from core.decoding.fast_paths import eval_mode
        from tasks.translation.batching import pad_ids

        src, lengths = pad_ids(sources)  # (B, S), (B,)
        device = self.device
        with eval_mode(self.network):
            return self.decode(src.to(device), lengths.to(device), beam, nbest, need_weights)

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` the model never saw in training (its translation of them is a guess), each once.

        Empty when the model does not know its training words (a pretrained Marian model, or one written
        before they were stored).
        """
        return [] if self.known_words is None else self.known_words.unknown(text)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Source ids per text, cut to ``max_source_tokens`` (with a warning)."""
        encoded = []
        for i, t in enumerate(texts):
            ids = self.src_tokenizer.encode(t)
            if len(ids) > self.max_source_tokens:
                warnings.warn(
                    f"input {i} has {len(ids)} subword tokens; truncated to max_source_tokens={self.max_source_tokens}",
                    stacklevel=3,
                )
                ids = ids[: self.max_source_tokens]
            encoded.append(ids)
        return encoded

    def translate(
        self,
        texts: str | Sequence[str],
        beam: int = 5,
        nbest: int = 1,
        return_attention: bool = False,
        batch_size: int = 64,
    ) -> Any:
        """Translate one sentence or a list of them.

        Characters never seen in training map to the unknown token (never an error). Inputs longer than
        ``max_source_tokens`` subwords are truncated with a warning.

        Args:
            texts: a source sentence, or a list of them (a string is one sentence, never its characters).
            beam: beam size (1 = greedy).
            nbest: hypotheses per sentence (≤ beam).
            return_attention: return :class:`Translation` objects with (T, S) attention instead of strings.
            batch_size: sentences decoded together.

        Returns:
            ``nbest == 1``: one item per input; else a list of ``nbest`` items per input. Items are
            strings, or :class:`Translation` when ``return_attention``. For a single string, its one result
            (not a list of one).

        Raises:
            core.errors.ConfigError: ``beam`` outside 1-128 or ``nbest`` outside 1-``beam``.
            core.errors.DecodingError: the model gave no hypothesis (non-finite scores).
        """
        if isinstance(texts, str):
            return self.translate([texts], beam, nbest, return_attention, batch_size)[0]
        hypotheses = self.hypotheses(texts, beam, nbest, return_attention, batch_size)
        items = [[h if return_attention else h.text for h in hyps] for hyps in hypotheses]
        return [hyps[0] if nbest == 1 else hyps for hyps in items]

    def hypotheses(
        self,
        texts: Sequence[str],
        beam: int = 5,
        nbest: int = 1,
        need_weights: bool = False,
        batch_size: int = 64,
    ) -> list[list[Translation]]:
        """The ``nbest`` best hypotheses of every sentence, best first, with their scores and tokens (what
        :meth:`translate` and the CLI print).

        Args:
            texts: source sentences.
            beam: beam size (1 = greedy).
            nbest: hypotheses per sentence (≤ beam).
            need_weights: also each hypothesis' ``(T, S)`` attention (else ``attention`` is None). CTranslate2
                searches sentence by sentence when asked for it with ``beam > 1`` (see ``tasks.translation.ct2``).
            batch_size: sentences decoded together.

        Raises:
            core.errors.ConfigError: ``texts`` not strings, or ``nbest`` outside 1-``beam``.
            core.errors.DecodingError: the model gave no hypothesis (non-finite scores).
        """
        if not all(isinstance(t, str) for t in texts):
            raise ConfigError("translate() takes a sentence or a list of sentences (strings)")
        if not 1 <= nbest <= beam:
            raise ConfigError(f"need 1 <= nbest <= beam, got nbest={nbest}, beam={beam}")
        src_tok, tgt_tok = self.src_tokenizer, self.tgt_tokenizer
        encoded = self.encode(texts)
        # Decode in length-sorted batches (little padding), then restore the input order.
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        results: list[list[Translation]] = [[] for _ in texts]
        for k in range(0, len(order), batch_size):
            idx = order[k : k + batch_size]
            res = self.search([encoded[i] for i in idx], beam, nbest, need_weights)
            for j, i in enumerate(idx):
                s_len = max(1, len(encoded[i]))
                results[i] = [
                    Translation(
                        tgt_tok.decode(toks),
                        float(score),
                        [src_tok.id_to_token(t) for t in encoded[i]],
                        [tgt_tok.id_to_token(t) for t in toks],
                        None if att is None else att[:, :s_len].float().cpu(),  # (T, S)
                    )
                    for toks, score, att in zip(res.tokens[j], res.scores[j], res.attention[j])
                ]
        return results
