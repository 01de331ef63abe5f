"""Reading a PyTorch translation model without Lightning: :func:`load_translation` (folder, ``hf://``, ``.ckpt`` or
URL) and what it returns, :class:`LoadedTranslation`.

``Translator.from_pretrained`` wraps it; an export reads it to write the engine's files. The same safe path as
``TranslationModule.from_pretrained`` (``core.io.rebuild``): no unpickling, the hyper-parameters validated, shapes
checked on the ``meta`` device before anything is allocated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.errors import CheckpointError
from core.io.checks import checked_parts
from core.io.model_folder import read_task_files
from core.io.rebuild import construct_checked, load_checked_weights
from core.text.known_words import KnownWords
from core.text.tokenizers import BaseTokenizer
from tasks.translation.networks import build_network
from tasks.translation.options import TranslationFiles, TranslationOptions, checked_options
from tasks.translation.stored import read_artifacts

__all__ = ["LoadedTranslation", "load_translation"]


@dataclass
class LoadedTranslation:
    """A translation model read from a file by :func:`load_translation`: its network (eval mode) and what goes
    with it.

    Attributes:
        network: the network, its weights loaded.
        options: its validated options.
        tokenizers: ``(source, target)``.
        known_words: the training sources' words, when stored.
        meta: the file's checked metadata (tokenizers, Marian config, ...), as an export writes it again.
        source: the file, for messages.
    """

    network: nn.Module
    options: TranslationOptions
    tokenizers: tuple[BaseTokenizer, BaseTokenizer]
    known_words: KnownWords | None
    meta: dict[str, Any]
    source: str


def load_translation(
    path: str | os.PathLike[str],
    map_location: str | torch.device | None = "cpu",
    strict: bool = True,
    sha256: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> LoadedTranslation:
    """A PyTorch translation model (folder, ``hf://``, ``.ckpt`` or URL) read without Lightning and checked (see
    :meth:`Translator.from_pretrained`, which wraps it; an export reads it to write the engine's files)."""
    stored = read_task_files(TranslationFiles, path, sha256)
    source = stored.source
    # The module's other options (optimizer, pretrained) do not concern inference: dropped without a word
    # (the module warns about names no version takes).
    hp, meta, state = checked_parts(
        TranslationFiles, stored.hparams, stored.meta, stored.state, source, TranslationOptions, warn_unknown=False
    )
    options = checked_options(hp, dict(overrides or {}), source)
    artifacts = read_artifacts(meta, source, None, None)
    assert artifacts.tokenizers is not None  # no current tokenizers: always read
    src, tgt = artifacts.tokenizers
    pretrained = meta.get("pretrained") if options.arch == "marian" else None
    if options.arch == "marian" and not isinstance(pretrained, dict):
        raise CheckpointError(f"{source}: a Marian model without its stored config ('pretrained')")

    def build(device: str | None) -> nn.Module:
        def make() -> nn.Module:
            holder = nn.Module()  # the module's weights are its network's under "model."
            holder.model = build_network(options, src.vocab_size, tgt.vocab_size, pretrained)
            return holder

        return construct_checked(make, source, "a translation network", device)

    holder = load_checked_weights(build, state, strict, source, "the translation network of its own options")
    network = holder.get_submodule("model")
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        network.to(map_location)
    network.eval()
    return LoadedTranslation(network, options, (src, tgt), artifacts.known_words, meta, source)
