"""A pretrained MarianMT model's own tokenizer behind the task's tokenizer interface.

The task's tokenizers share ``pad=0, bos=1, eos=2, unk=3`` (``core.text.tokenizers``); Marian's vocabulary has
``</s>=0``, ``<unk>=1`` and a ``<pad>`` at its end, and no BOS (its decoder starts from ``<pad>``). Our ids are
Marian's shifted by :data:`OFFSET` = 2, which lands Marian's ``</s>`` on our EOS and ``<unk>`` on our UNK and
frees 0 and 1 for PAD and BOS: data loading, losses and beam search stay the task's own, and
:class:`tasks.translation.models.marian.MarianSeq2Seq` maps ids in and logits out.

The tokenizer files (two SentencePiece models, ``vocab.json``, ``tokenizer_config.json``) travel with every
checkpoint as plain data (``core.io.model_folder.file_value``) and are written back byte for byte into a model
folder; they are read with ``transformers.MarianTokenizer`` (needs ``sentencepiece``: ``pip install
"attn-suite[pretrained]"``), a fixed class chosen here, never one named by a file.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from core.errors import CheckpointError, ConfigError
from core.io.folder_files import file_bytes, file_value
from core.text.tokenizers import SPECIAL_TOKENS, BaseTokenizer

__all__ = ["FILES", "OFFSET", "MarianTokenizerSide", "marian_tokenizers", "read_tokenizer_files"]

OFFSET = 2
#: The files of a Marian tokenizer (all required).
FILES = ("source.spm", "target.spm", "vocab.json", "tokenizer_config.json")
META_KEY = "hf_tokenizer"  # metadata entry holding the files


class MarianTokenizerSide(BaseTokenizer):
    """One side (source or target) of a Marian tokenizer, with ids shifted by :data:`OFFSET`.

    Args:
        hf: the ``transformers.MarianTokenizer`` (shared by both sides).
        side: ``src`` (source SentencePiece model) or ``tgt`` (target one).
        digest: SHA-256 of the tokenizer files (two sides of one tokenizer compare equal by it).
    """

    kind: ClassVar[str] = "marian"

    def __init__(self, hf: Any, side: str, digest: str) -> None:
        self.hf_tokenizer, self.side, self.digest = hf, side, digest

    @property
    def vocab_size(self) -> int:
        return int(self.hf_tokenizer.vocab_size) + OFFSET

    def encode(self, text: str) -> list[int]:
        """Subword ids of ``text`` (no BOS/EOS), in our id space."""
        kw = {"text_target": text} if self.side == "tgt" else {"text": text}
        return [i + OFFSET for i in self.hf_tokenizer(**kw, add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Iterable[int]) -> str:
        return str(self.hf_tokenizer.decode([i - OFFSET for i in self._strip(ids)], skip_special_tokens=True))

    def id_to_token(self, i: int) -> str:
        i = int(i)
        if i < OFFSET:
            return SPECIAL_TOKENS[i]
        return str(self.hf_tokenizer.convert_ids_to_tokens(i - OFFSET))

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint stores per side; the files themselves are under ``hf_tokenizer`` (stored once)."""
        return {"type": "marian", "side": self.side, "sha256": self.digest}


def _digest(files: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in FILES:
        h.update(name.encode())
        h.update(files[name])
    return h.hexdigest()


_TMP_DIRS: list[str] = []


@atexit.register
def _cleanup() -> None:
    for d in _TMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


def marian_tokenizers(files: Mapping[str, bytes], what: str) -> tuple[MarianTokenizerSide, MarianTokenizerSide]:
    """The ``(src, tgt)`` tokenizers of Marian tokenizer files.

    Only a few plain settings of ``tokenizer_config.json`` are used (languages); SentencePiece options from a
    file are ignored.

    Raises:
        ConfigError: a file is missing or unusable, separate source/target vocabularies, or ``sentencepiece``
            is not installed (names ``what``).
    """
    missing = [n for n in FILES if n not in files]
    if missing:
        raise ConfigError(f"{what}: the Marian tokenizer file(s) {', '.join(missing)} are missing")
    try:
        config = json.loads(files["tokenizer_config.json"].decode("utf-8"))
        vocab = json.loads(files["vocab.json"].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{what}: tokenizer_config.json / vocab.json are not valid JSON ({err})") from None
    if not isinstance(config, dict) or not isinstance(vocab, dict):
        raise ConfigError(f"{what}: tokenizer_config.json / vocab.json must be JSON objects")
    if config.get("separate_vocabs"):
        raise ConfigError(f"{what}: a Marian tokenizer with separate source/target vocabularies is not supported")
    if vocab.get("</s>") != 0 or vocab.get("<unk>") != 1 or not isinstance(vocab.get("<pad>"), int):
        raise ConfigError(
            f"{what}: vocab.json must map </s> to 0, <unk> to 1 and have a <pad> (as Marian vocabularies do)"
        )
    try:
        import sentencepiece  # noqa: F401 - MarianTokenizer needs it; say so clearly
        from transformers import MarianTokenizer
    except ImportError:
        raise ConfigError(
            f"{what}: Marian tokenizers need the sentencepiece package: pip install 'attn-suite[pretrained]'"
        ) from None
    # MarianTokenizer reads files (and re-reads them when copied): a private folder for this process.
    folder = Path(tempfile.mkdtemp(prefix="attn-marian-"))
    _TMP_DIRS.append(str(folder))
    for name in FILES:
        (folder / name).write_bytes(files[name])
    langs = {k: config[k] for k in ("source_lang", "target_lang") if isinstance(config.get(k), str)}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*sacremoses.*")
            hf = MarianTokenizer(
                str(folder / "source.spm"),
                str(folder / "target.spm"),
                str(folder / "vocab.json"),
                separate_vocabs=False,
                **langs,
            )
    except (OSError, RuntimeError, ValueError, TypeError) as err:  # a corrupt SentencePiece model
        raise ConfigError(f"{what}: the Marian tokenizer files do not load ({type(err).__name__}: {err})") from None
    digest = _digest(files)
    return MarianTokenizerSide(hf, "src", digest), MarianTokenizerSide(hf, "tgt", digest)


def read_tokenizer_files(folder: Path, what: str) -> dict[str, bytes]:
    """The Marian tokenizer files of a pretrained model folder.

    Raises:
        ConfigError: one is missing (names the folder and the file).
    """
    out = {}
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise ConfigError(
                f"{what}: {name} is missing in {folder} (the Marian tokenizer: source.spm, "
                f"target.spm, vocab.json, tokenizer_config.json)"
            )
        out[name] = path.read_bytes()
    return out


def files_to_metadata(files: Mapping[str, bytes]) -> dict[str, Any]:
    """``{file name: file_value}``: the checkpoint's ``hf_tokenizer`` entry."""
    return {name: file_value(files[name]) for name in FILES}


def files_from_metadata(meta: Mapping[str, Any], source: str) -> dict[str, bytes]:
    """Inverse of :func:`files_to_metadata` on a checkpoint's metadata (untrusted).

    Raises:
        CheckpointError: the entry is missing or malformed (names ``source``).
    """
    stored = meta.get(META_KEY)
    if not isinstance(stored, dict):
        raise CheckpointError(f"{source}: no Marian tokenizer files ('{META_KEY}' in the metadata)")
    return {name: file_bytes(stored.get(name), f"{source}: {META_KEY}.{name}") for name in FILES}
