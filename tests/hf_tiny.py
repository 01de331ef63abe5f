"""Tiny ``transformers`` models saved as Hugging Face folders, built in the tests (nothing is downloaded).

Each builder writes what a hub repository holds (``config.json``, ``model.safetensors``, the processor or
tokenizer files) with random weights and a few thousand parameters.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch


def vision_folder(path: Path, model_type: str = "vit", image_size: int = 48) -> Path:
    """A 2-layer (or 2-stage) vision backbone with its image processor."""
    import transformers as tr

    torch.manual_seed(0)
    small = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": image_size,
        "patch_size": 8,
    }
    if model_type == "vit":
        model = tr.ViTModel(tr.ViTConfig(**small))
    elif model_type == "dinov2":
        model = tr.Dinov2Model(tr.Dinov2Config(**small))
    elif model_type == "clip":
        model = tr.CLIPModel(
            tr.CLIPConfig(
                vision_config=small,
                text_config={
                    "hidden_size": 16,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                    "intermediate_size": 32,
                    "vocab_size": 64,
                    "bos_token_id": 0,
                    "eos_token_id": 1,
                    "pad_token_id": 1,
                },
            )
        )
    elif model_type == "convnext":
        model = tr.ConvNextModel(tr.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2))
    elif model_type == "resnet":
        model = tr.ResNetModel(
            tr.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
        )
    else:
        raise ValueError(model_type)
    model.save_pretrained(path)
    processor = {
        "do_normalize": True,
        "do_resize": True,
        "do_rescale": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "size": {"height": image_size, "width": image_size},
    }
    (path / "preprocessor_config.json").write_text(json.dumps(processor), encoding="utf-8")
    return path


def speech_folder(path: Path, model_type: str = "wav2vec2", attention_mask: bool = True) -> Path:
    """A 2-layer wav2vec2 / HuBERT / WavLM with its feature extractor (320x downsampling, 16 kHz)."""
    import transformers as tr

    torch.manual_seed(0)
    small = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": (16, 16, 16),
        "conv_stride": (5, 8, 8),
        "conv_kernel": (10, 8, 8),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "mask_time_prob": 0.0,
        "feat_extract_norm": "layer" if attention_mask else "group",
        "do_stable_layer_norm": attention_mask,
    }
    if model_type == "wav2vec2":
        model = tr.Wav2Vec2Model(tr.Wav2Vec2Config(**small))
    elif model_type == "hubert":
        model = tr.HubertModel(tr.HubertConfig(**small))
    elif model_type == "wavlm":
        model = tr.WavLMModel(tr.WavLMConfig(**small, num_buckets=32, max_bucket_distance=64))
    else:
        raise ValueError(model_type)
    model.save_pretrained(path)
    fe = {
        "do_normalize": True,
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": attention_mask,
        "sampling_rate": 16000,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(fe), encoding="utf-8")
    return path


def whisper_folder(path: Path) -> Path:
    """A 2-layer Whisper (encoder and decoder, as on the hub) with its feature extractor."""
    import transformers as tr

    torch.manual_seed(0)
    cfg = tr.WhisperConfig(
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=16,
        vocab_size=64,
        max_source_positions=1500,
        max_target_positions=32,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    tr.WhisperModel(cfg).save_pretrained(path)
    tr.WhisperFeatureExtractor(feature_size=16).save_pretrained(path)
    return path


def marian_folder(path: Path, texts: tuple[list[str], list[str]]) -> Path:
    """A 2-layer MarianMT with a real Marian tokenizer (two SentencePiece models trained on ``texts``)."""
    import sentencepiece as spm
    import transformers as tr

    path.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"</s>": 0, "<unk>": 1}
    for name, lines in zip(("source", "target"), texts):
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=buf,
            vocab_size=60,
            model_type="unigram",
            character_coverage=1.0,
            bos_id=-1,
            eos_id=2,
            unk_id=1,
            pad_id=-1,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        (path / f"{name}.spm").write_bytes(buf.getvalue())
        sp = spm.SentencePieceProcessor(model_file=str(path / f"{name}.spm"))
        for i in range(sp.get_piece_size()):
            vocab.setdefault(sp.id_to_piece(i), len(vocab))
    vocab["<pad>"] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tok = tr.MarianTokenizer(
        str(path / "source.spm"), str(path / "target.spm"), str(path / "vocab.json"), source_lang="en", target_lang="es"
    )
    tok.save_pretrained(path)
    torch.manual_seed(0)
    cfg = tr.MarianConfig(
        vocab_size=len(vocab),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        pad_token_id=vocab["<pad>"],
        eos_token_id=0,
        decoder_start_token_id=vocab["<pad>"],
        forced_eos_token_id=0,
    )
    tr.MarianMTModel(cfg).save_pretrained(path)
    return path
