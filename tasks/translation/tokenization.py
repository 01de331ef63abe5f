"""Subword tokenizer training and bulk encoding for the translation data."""

from __future__ import annotations

from core.errors import ConfigError
from core.text.tokenizers import SPECIAL_TOKENS, UNK_ID, BaseTokenizer, SubwordTokenizer


def encode_all(tok: BaseTokenizer, texts: list[str]) -> list[list[int]]:
    """Encode many texts (batched through HF ``tokenizers`` when available — it is multithreaded)."""
    hf = getattr(tok, "hf", None)
    if hf is not None and texts:
        return [list(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False)]
    return [tok.encode(t) for t in texts]


def train_subword(
    texts: list[str], vocab_size: int, model: str = "bpe", min_freq: int = 2, split_punctuation: bool = True
) -> SubwordTokenizer:
    """Train a :class:`core.text.tokenizers.SubwordTokenizer`, optionally splitting punctuation off words.

    ``core``'s tokenizer splits on whitespace only, so "coche", "coche?" and "¿coche" are unrelated
    words to the subword model. With ``split_punctuation`` the pre-tokenizer also isolates punctuation
    (after the Metaspace marker is placed, so ``decode`` still restores the original spacing exactly:
    "¿Dónde está?" → ``▁ ¿ Dónde ▁está ?`` → "¿Dónde está?"). The result is an ordinary
    ``SubwordTokenizer`` (its JSON carries the pre-tokenizer), so checkpoints and ``tokenizer_from_dict``
    are unaffected.
    """
    if not split_punctuation:
        return SubwordTokenizer.train(texts, vocab_size=vocab_size, model=model, min_freq=min_freq)
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = list(SPECIAL_TOKENS)
    unk = SPECIAL_TOKENS[UNK_ID]
    trainer: trainers.Trainer
    if model == "bpe":
        tok = Tokenizer(models.BPE(unk_token=unk))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_freq, special_tokens=specials, show_progress=False
        )
    elif model == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token=unk, show_progress=False
        )
    else:
        raise ConfigError(f"--data.tokenizer_model must be 'bpe' or 'unigram', got {model!r}")
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(texts, trainer=trainer)
    return SubwordTokenizer(tok)
