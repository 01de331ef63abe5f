"""Captioning with a trained network: the library API behind ``CaptioningModule.caption`` (:class:`Captioner`), its
result type and the per-word attention figure of one image.

Nothing here imports Lightning or the training stack: :meth:`Captioner.from_pretrained` loads a model folder,
``.ckpt`` or ``hf://`` model without them (through the same checks as ``CaptioningModule.from_pretrained``,
``core.io.rebuild``), and captions exactly as the module does. Only an ``hf:`` backbone needs ``transformers`` (it
is rebuilt from its stored config); a torchvision backbone (``resnet*``, ``mobilenet*``) needs torchvision.

Example:
    >>> captioner = Captioner.from_pretrained("demo_output/captioning/model")  # doctest: +SKIP
    >>> captioner.caption("scene.png")                                          # doctest: +SKIP
    'a red circle left of a blue square'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from core.decoding.beam import StepDecoder, beam_search
from core.decoding.fast_paths import eval_mode
from core.engines.folder import read_engine_folder
from core.engines.onnx import EngineNetwork
from core.errors import ConfigError
from core.io.checks import checked_parts
from core.io.folder_files import HUB_PREFIX, folder_engine, resolve_hub
from core.io.model_folder import read_task_files
from core.io.rebuild import construct_checked, load_checked_weights
from tasks.captioning.images import eval_transform, load_rgb, shown_image
from tasks.captioning.network import CaptionNetwork, NetworkOptions, build_network
from tasks.captioning.onnx_graphs import OnnxCaptionNetwork, load_onnx
from tasks.captioning.stored import CaptioningFiles, StoredOptions, check_vocab
from tasks.captioning.vocab import CaptionVocab

__all__ = ["ENGINES", "Caption", "Captioner", "LoadedCaptioning", "load_captioning", "save_attention_figure"]

ENGINES = ("onnxruntime",)  # the engines an export may run on (``attn-caption export --format onnx``)


@dataclass
class Caption:
    """One caption hypothesis of an image.

    Attributes:
        text: the caption.
        score: length-normalised log-probability.
        words: the emitted words (one per attention map).
        attention: ``(len(words), g, g)`` where each word looked on the ``g x g`` grid, or None.
    """

    text: str
    score: float
    words: list[str]
    attention: Tensor | None


@dataclass(frozen=True)
class Captioner:
    """What captioning needs: the network, its vocabulary, the image preprocessing and the longest caption.

    ``CaptioningModule.caption`` / ``caption_images`` / ``generate`` / ``preprocess`` are these methods on the
    module's network (validation, test and prediction decode through them too).

    Attributes:
        network: the encoder and decoder (or their ONNX Runtime graphs).
        vocab: the word vocabulary.
        transform: RGB PIL image -> ``(3, image_size, image_size)`` normalised tensor.
        max_len: default longest caption (words).
        image_size: side of the square image the network sees (what the attention figures show).
    """

    network: CaptionNetwork | OnnxCaptionNetwork
    vocab: CaptionVocab
    transform: Callable[[Image.Image], Tensor]
    max_len: int
    image_size: int

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        map_location: str | torch.device | None = "cpu",
        strict: bool = True,
        sha256: str | None = None,
        threads: int | None = None,
        **overrides: Any,
    ) -> Captioner:
        """A captioning model folder, ``hf://ORG/NAME[@REVISION]``, ``.ckpt`` file or URL, loaded without Lightning;
        or an ONNX export (``attn-caption export --format onnx``), run on ONNX Runtime.

        The same safe path as ``CaptioningModule.from_pretrained`` (``core.io.rebuild``): no unpickling, the
        hyper-parameters validated against :class:`~tasks.captioning.stored.StoredOptions` with the module's
        bounds and old names, old weights upgraded, shapes and dtypes checked on the ``meta`` device before
        anything is allocated, non-finite weights refused. Captions are identical to the module's.

        Args:
            path: the model.
            map_location: device of the network (None keeps CPU; an ONNX export runs on the CPU).
            strict: exact state-dict match.
            sha256: expected digest (or prefix) of the file (a folder's weights).
            threads: an ONNX export's CPU threads (None: ONNX Runtime's default); PyTorch uses
                ``torch.set_num_threads``.
            **overrides: options to change (e.g. ``max_len=10``), fields of ``StoredOptions``.

        Raises:
            core.errors.CheckpointError: an unreadable, unsafe or other-task file, bad hyper-parameters, or
                weights that do not fit (the message names the file).
            core.errors.ConfigError: an override that is no option, or an ONNX export without ``onnxruntime``.
        """
        local = resolve_hub(os.fspath(path)) if os.fspath(path).startswith(HUB_PREFIX) else Path(path).expanduser()
        if folder_engine(local) is not None:
            if sha256 is not None:
                raise ConfigError("sha256 pins a checkpoint or a model folder's weights; an engine export has none")
            return cls._from_engine(local, map_location, threads, overrides)
        loaded = load_captioning(path, map_location, strict, sha256, overrides)
        return cls.for_options(loaded.network, loaded.options, loaded.vocab)

    @classmethod
    def for_options(
        cls, network: CaptionNetwork | OnnxCaptionNetwork, o: StoredOptions, vocab: CaptionVocab
    ) -> Captioner:
        """``network`` with the vocabulary, image transform and longest caption of options ``o``."""
        return cls(network, vocab, eval_transform(o.image_size, o.mean, o.std), o.max_len, o.image_size)

    @classmethod
    def _from_engine(
        cls, path: Path, map_location: str | torch.device | None, threads: int | None, overrides: dict[str, Any]
    ) -> Captioner:
        """An ONNX export: its options and vocabulary checked, its network on ONNX Runtime."""
        folder = read_engine_folder(CaptioningFiles, path, StoredOptions, ENGINES)
        options = _options(folder.hparams, overrides, folder.source)
        vocab = construct_checked(lambda: _vocab(options.vocab), folder.source, "a CaptioningModule", None)
        check_vocab(folder.meta, vocab, folder.source)
        device = "cpu" if map_location is None else str(map_location)
        if device != "cpu":
            raise ConfigError(f"{folder.source}: the ONNX export runs on the CPU (map_location={device!r})")
        return cls.for_options(load_onnx(folder, options, threads), options, vocab)

    @property
    def device(self) -> torch.device:
        """Where the network's weights are (the CPU for an engine's network, which has none in PyTorch)."""
        weight = next(self.network.parameters(), None)
        return torch.device("cpu") if weight is None else weight.device

    @property
    def engine(self) -> str:
        """What runs the network: ``"pytorch"`` or ``"onnxruntime"``."""
        return self.network.engine if isinstance(self.network, EngineNetwork) else "pytorch"

    def preprocess(self, image: Image.Image) -> Tensor:
        """RGB PIL image -> ``(3, image_size, image_size)`` normalised tensor (inference transform)."""
        return self.transform(image)

    @torch.no_grad()
    def generate(
        self,
        images: Tensor,
        beam_size: int = 5,
        nbest: int = 1,
        max_len: int | None = None,
        length_penalty: float = 1.0,
    ) -> list[list[Caption]]:
        """Beam-search captions for a batch of preprocessed images.

        Args:
            images: ``(B, 3, H, W)`` normalised.
            beam_size: beam width (1 = greedy).
            nbest: hypotheses per image (<= beam_size).
            max_len: maximum caption length in words (default: :attr:`max_len`).
            length_penalty: exponent of the length normalisation.

        Returns:
            ``nbest`` captions per image, best first.
        """
        network, vocab = self.network, self.vocab
        decoder: StepDecoder = network  # the decoding contract, checked by the type checker
        if isinstance(network, OnnxCaptionNetwork):  # one graph: the images to the first state
            state = network.init_state(images)
        else:
            state = network.init_state(network.encode(images))  # (B, S, D) grid features
        res = beam_search(
            decoder.step,
            state,
            batch_size=images.shape[0],
            bos_id=vocab.bos_id,
            eos_id=vocab.eos_id,
            max_len=(max_len or self.max_len) + 1,  # +1: the EOS step
            beam_size=beam_size,
            nbest=nbest,
            length_penalty=length_penalty,
            pad_id=vocab.pad_id,
            suppress=(vocab.pad_id, vocab.bos_id),
        )
        g = network.grid_size
        out: list[list[Caption]] = []
        for toks, scores, attns in zip(res.tokens, res.scores, res.attention):
            out.append(
                [
                    Caption(
                        vocab.decode(t), float(s), vocab.words(t), None if a is None else a.view(len(t), g, g)
                    )  # (T, g*g) -> (T, g, g)
                    for t, s, a in zip(toks, scores, attns)
                ]
            )
        return out

    def best(self, images: Tensor, beam_size: int) -> list[str]:
        """The best caption of each image of a batch (validation / test / predict)."""
        return [hyps[0].text for hyps in self.generate(images, beam_size=beam_size)]

    @torch.no_grad()
    def caption_images(
        self, images: Sequence[Image.Image], beam: int = 5, nbest: int = 1, batch_size: int = 16
    ) -> list[list[Caption]]:
        """``nbest`` captions (with scores and attention) of each RGB PIL image, best first."""
        out: list[list[Caption]] = []
        device = self.device
        with eval_mode(self.network):
            for start in range(0, len(images), batch_size):
                x = torch.stack([self.transform(im) for im in images[start : start + batch_size]]).to(device)
                out.extend(self.generate(x, beam_size=beam, nbest=nbest))
        return out

    @torch.no_grad()
    def caption(
        self,
        images: str | os.PathLike[str] | Image.Image | Sequence[str | os.PathLike[str] | Image.Image],
        beam: int = 5,
        nbest: int = 1,
        return_attention: bool = False,
        batch_size: int = 16,
    ) -> Any:
        """Caption one image or a list of them (``CaptioningModule.caption`` documents it)."""
        if isinstance(images, (str, os.PathLike, Image.Image)):
            return self.caption([images], beam, nbest, return_attention, batch_size)[0]
        pil = [im.convert("RGB") if isinstance(im, Image.Image) else load_rgb(os.fspath(im)) for im in images]
        hyps = self.caption_images(pil, beam=beam, nbest=nbest, batch_size=batch_size)
        if nbest > 1:
            return hyps
        g = self.network.grid_size
        if not return_attention:
            return [h[0].text for h in hyps]
        return [
            (h[0].text, h[0].attention if h[0].attention is not None else torch.zeros(len(h[0].words), g, g))
            for h in hyps
        ]


def save_attention_figure(image: Image.Image, caption: str, weights: Tensor, path: str | Path, image_size: int) -> Path:
    """Write the per-word attention overlay of one captioned image as a PNG.

    Args:
        image: the RGB image that was captioned.
        caption: its caption (one panel per word).
        weights: ``(n_words, g, g)`` attention maps from `CaptioningModule.caption`.
        path: PNG destination (parent folders are created).
        image_size: the image is shown resized/cropped as the network saw it.

    Returns:
        The PNG path.
    """
    from core.viz import plot_image_attention, save_figure

    fig = plot_image_attention(shown_image(image, image_size), weights, caption.split())
    return save_figure(fig, path)


@dataclass
class LoadedCaptioning:
    """A PyTorch captioning model read by :func:`load_captioning`: its network (eval mode) and what goes with it.

    Attributes:
        network: the network, its weights loaded.
        options: its validated options.
        vocab: its word vocabulary.
        meta: the file's checked metadata (vocabulary, image preprocessing, an ``hf:`` backbone's config), as an
            export writes it again.
        source: the file, for messages.
    """

    network: CaptionNetwork
    options: StoredOptions
    vocab: CaptionVocab
    meta: dict[str, Any]
    source: str


def _options(hp: dict[str, Any], overrides: dict[str, Any], source: str) -> StoredOptions:
    unknown = sorted(set(overrides) - {f.name for f in fields(StoredOptions)})
    if unknown:
        raise ConfigError(f"Captioner.from_pretrained: no option {', '.join(unknown)} (StoredOptions)")
    return construct_checked(lambda: StoredOptions(**{**hp, **overrides}), source, "captioning options", None)


def load_captioning(
    path: str | os.PathLike[str],
    map_location: str | torch.device | None = "cpu",
    strict: bool = True,
    sha256: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> LoadedCaptioning:
    """A PyTorch captioning model (folder, ``hf://``, ``.ckpt`` or URL) read without Lightning and checked (see
    :meth:`Captioner.from_pretrained`, which wraps it; an export reads it to write the engine's files)."""
    stored = read_task_files(CaptioningFiles, path, sha256)
    source = stored.source
    # The module's training options (optimizer, loss, evaluation) do not concern inference: dropped without a
    # word (the module warns about names no version takes).
    hp, meta, state = checked_parts(
        CaptioningFiles, stored.hparams, stored.meta, stored.state, source, StoredOptions, warn_unknown=False
    )
    options = _options(hp, dict(overrides or {}), source)
    vocab = construct_checked(lambda: _vocab(options.vocab), source, "a CaptioningModule", None)
    check_vocab(meta, vocab, source)  # what the module's restore checks
    o = options
    recorded = NetworkOptions.recorded_attention_options(o.decoder, o.attention, o.attention_options, o.hidden_dim)
    values = {f.name: getattr(o, f.name) for f in fields(NetworkOptions)}
    network_options = NetworkOptions(**{**values, "attention_options": recorded})

    def build(device: str | None) -> nn.Module:
        def make() -> nn.Module:
            holder = nn.Module()  # the module's weights are its network's under "model."
            holder.model, _ = build_network(
                network_options, len(vocab), o.image_size, o.mean, o.std, o.pretrained_config
            )
            return holder

        return construct_checked(make, source, "a captioning network", device)

    holder = load_checked_weights(build, state, strict, source, "the captioning network of its own options")
    network = holder.get_submodule("model")
    assert isinstance(network, CaptionNetwork)  # what build_network returns
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        network.to(map_location)
    network.eval()
    return LoadedCaptioning(network, options, vocab, meta, source)


def _vocab(stored: dict[str, Any] | None) -> CaptionVocab:
    """The word vocabulary of a file's options (the module's constructor refuses the same).

    Raises:
        ConfigError: none, or not a captioning vocabulary.
    """
    if stored is None:
        raise ConfigError("model.vocab is missing: a captioning model is rebuilt with its word vocabulary")
    try:
        return CaptionVocab.from_dict(stored)
    except ValueError as err:
        raise ConfigError(f"model.vocab: not a captioning word vocabulary: {err}") from None
