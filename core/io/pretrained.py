"""Pretrained components through ``transformers``: resolve ``hf:<hub-id-or-folder>``, load, rebuild offline.

A task option such as ``--model.encoder hf:facebook/wav2vec2-base`` or ``--model.pretrained
Helsinki-NLP/opus-mt-en-es`` names a Hugging Face model: a local folder (``config.json`` + weights +
processor/tokenizer files) or a hub id, downloaded once through ``huggingface_hub`` and its cache.

Two ways in, on purpose different:

* **training from a pretrained model** (:func:`load_pretrained`): the folder's weights are read by
  ``transformers`` (``from_pretrained``, never ``trust_remote_code``), after its ``model_type`` was checked
  against :data:`MODEL_TYPES`; the config is kept as plain data (:func:`export_config`);
* **loading one of our checkpoints or model folders** (:func:`build_from_config`): the hub and the original
  folder are never touched. The config stored in the checkpoint (plain JSON-like data, untrusted) is checked
  (:func:`check_config`: allowlisted ``model_type``, no remote-code keys, sizes bounded) and the network is
  rebuilt with ``AutoConfig.for_model`` + ``from_config``, with random weights that the checkpoint's own
  state dict then replaces (strictly, shapes compared first on the ``meta`` device by ``core.io.rebuild``).

Freezing, unfreezing and learning rates of pretrained parts are in :mod:`core.train.finetune`.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import CheckpointError, ConfigError, UserError
from core.io.hparams import FORBIDDEN_KEYS, check_plain
from core.io.jsonio import read_json

__all__ = [
    "HF_PREFIX",
    "MODEL_TYPES",
    "build_from_config",
    "check_config",
    "export_config",
    "hf_name",
    "is_hf_spec",
    "load_pretrained",
    "read_json_file",
    "read_model_type",
    "resolve_pretrained",
]

HF_PREFIX = "hf:"

#: The ``model_type`` values each kind of pretrained part accepts (nothing else is ever built).
MODEL_TYPES: dict[str, tuple[str, ...]] = {
    "vision": ("vit", "convnext", "resnet", "clip_vision_model", "siglip_vision_model", "dinov2"),
    "speech": ("wav2vec2", "hubert", "wavlm", "whisper"),
    "translation": ("marian",),
}
#: Full models whose vision tower is what a vision encoder loads.
VISION_TOWERS = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}
_WHAT = {"vision": "a vision backbone", "speech": "a speech encoder", "translation": "a translation model"}

# Files a hub download fetches: configs, weights, processor and tokenizer files (not TF/Flax/ONNX copies).
_HUB_FILES = ["*.json", "*.safetensors", "pytorch_model.bin", "*.spm", "*.model", "*.txt"]

# Config entries never kept nor accepted: bookkeeping, local paths, label tables of task heads we do not
# build, and anything that would name code (auto_map is how a config asks for remote code).
_DROP_KEYS = frozenset(
    {
        "_name_or_path",
        "transformers_version",
        "architectures",
        "dtype",
        "torch_dtype",
        "id2label",
        "label2id",
        "_attn_implementation_autoset",
        "_commit_hash",
    }
)
_CODE_KEYS = frozenset({"auto_map", "trust_remote_code", "custom_pipelines"}) | FORBIDDEN_KEYS
# Which attention kernel transformers runs. Besides "eager"/"sdpa"/"flash_attention_2", a value such as
# "kernels-community/..." makes transformers fetch and import a kernel from the hub: a stored config never
# carries it (we never write it), and a model folder may only name the built-in ones.
_IMPLEMENTATION_KEYS = frozenset({"attn_implementation", "_attn_implementation", "experts_implementation"})
_BUILTIN_IMPLEMENTATIONS = frozenset({"eager", "sdpa", "flash_attention_2", "flex_attention"})

# Size entries of the configs we build, bounded so that a tampered checkpoint cannot make the rebuild
# allocate gigabytes before its weights are compared (some modules compute tables at init, e.g. Marian's
# sinusoidal positions). Every other number must stay within +-_MAX_NUMBER.
_LIMITS: dict[str, tuple[int, int]] = {
    **dict.fromkeys(
        (
            "hidden_size",
            "d_model",
            "embedding_size",
            "output_hidden_size",
            "hidden_sizes",
            "conv_dim",
            "tdnn_dim",
            "classifier_proj_size",
            "xvector_output_dim",
            "proj_codevector_dim",
            "codevector_dim",
        ),
        (1, 16_384),
    ),
    **dict.fromkeys(("intermediate_size", "encoder_ffn_dim", "decoder_ffn_dim"), (1, 65_536)),
    **dict.fromkeys(
        (
            "num_hidden_layers",
            "encoder_layers",
            "decoder_layers",
            "depths",
            "num_adapter_layers",
            "num_feat_extract_layers",
        ),
        (0, 128),
    ),
    **dict.fromkeys(
        ("num_attention_heads", "encoder_attention_heads", "decoder_attention_heads", "num_conv_pos_embedding_groups"),
        (1, 256),
    ),
    **dict.fromkeys(("vocab_size", "decoder_vocab_size"), (1, 1_000_000)),
    **dict.fromkeys(
        ("max_position_embeddings", "max_source_positions", "max_target_positions", "max_length"), (1, 65_536)
    ),
    "image_size": (1, 4096),
    "patch_size": (1, 1024),
    "num_channels": (1, 16),
    "num_mel_bins": (1, 512),
    "num_conv_pos_embeddings": (1, 4096),
    "conv_kernel": (1, 4096),
    "conv_stride": (1, 4096),
    "num_codevectors_per_group": (1, 65_536),
    "num_codevector_groups": (1, 64),
    "num_buckets": (1, 65_536),
    "max_bucket_distance": (1, 65_536),
}
_MAX_NUMBER = 10_000_000


# ---------------------------------------------------------------------------------------------- names
def is_hf_spec(value: Any) -> bool:
    """Whether an option value is ``hf:<hub-id-or-folder>``."""
    return isinstance(value, str) and value.startswith(HF_PREFIX)


def hf_name(value: str) -> str:
    """``hf:NAME`` -> ``NAME`` (a value without the prefix is returned as is)."""
    return value[len(HF_PREFIX) :] if value.startswith(HF_PREFIX) else value


def resolve_pretrained(name: str, option: str) -> Path:
    """The local folder of a pretrained model: ``name`` itself, or a hub id downloaded once (and cached).

    Args:
        name: a folder, or ``ORG/NAME[@REVISION]`` on the Hugging Face Hub (``hf:`` prefix allowed).
        option: the option that named it (e.g. ``--model.encoder``), for messages.

    Raises:
        ConfigError: no such folder, or the hub id cannot be fetched (offline and not cached, unknown or
            gated repository); the message names the id and suggests a local folder.
    """
    name = hf_name(name).strip()
    if not name:
        raise ConfigError(f"{option}: empty model name; expected hf:<hub id> or hf:<local folder>")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(
                f"{option}={name}: a file, expected a Hugging Face model folder (config.json, "
                f"weights, processor/tokenizer files) or a hub id such as ORG/NAME"
            )
        return path
    repo_id, _, revision = name.partition("@")
    if name.startswith((".", "/", "~")) or repo_id.count("/") > 1 or not all(repo_id.split("/")):
        raise ConfigError(f"{option}={name}: no such folder (and not a hub id of the form ORG/NAME)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    local = (
        f"download it once where there is a network (`hf download {repo_id}`) or pass a local model folder: "
        f"{option} hf:/path/to/folder"
    )
    try:
        return Path(
            snapshot_download(repo_id, revision=revision or None, allow_patterns=_HUB_FILES, library_name="attn-suite")
        )
    except RevisionNotFoundError:
        raise ConfigError(f"{option}: revision {revision!r} not found in the hub repository {repo_id}") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise ConfigError(
            f"{option}: hub repository {repo_id!r} not found, private or gated (log in with "
            f"`hf auth login` if you have access); or pass a local folder"
        ) from None
    except LocalEntryNotFoundError:
        raise ConfigError(
            f"{option}: {repo_id!r} is not a local folder, is not in the Hugging Face cache and the "
            f"hub cannot be reached (offline, or HF_HUB_OFFLINE=1); {local}"
        ) from None
    except HFValidationError as err:
        raise ConfigError(f"{option}: {name!r} is neither a folder nor a valid hub id ({err})") from None
    except (HfHubHTTPError, OSError) as err:
        raise ConfigError(f"{option}: downloading {repo_id!r} failed ({type(err).__name__}: {err}); {local}") from None


# ---------------------------------------------------------------------------------------------- folder files
def read_json_file(path: Path, what: str, purpose: str) -> dict[str, Any]:
    """A JSON object from a model folder, or a ``ConfigError`` naming the file and what it is needed for."""
    if not path.is_file():
        raise ConfigError(f"{what}: {path.name} is missing in {path.parent} ({purpose})")
    try:
        data = read_json(path, f"{what}: {path}")
    except UserError as err:
        raise ConfigError(str(err)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: {path} is not a JSON object")
    return data


def _kind_of(model_type: str) -> str | None:
    return next((k for k, types in MODEL_TYPES.items() if model_type in types), None)


def read_model_type(folder: Path, kind: str, option: str) -> str:
    """The ``model_type`` of a folder's ``config.json``, checked against the kind the option expects.

    Raises:
        ConfigError: no config, one of our own model folders, or a model type this kind does not take
            (named with what it is and what was expected).
    """
    what = f"{option}={folder}"
    cfg = read_json_file(folder / "config.json", what, "the model's configuration")
    if cfg.get("library_name") == "attn-suite":
        raise ConfigError(
            f"{what} is an attn-suite model folder (a trained task model); load it with --ckpt, "
            f"not as a pretrained component"
        )
    for key in sorted(_IMPLEMENTATION_KEYS & set(cfg)):
        if cfg[key] is not None and cfg[key] not in _BUILTIN_IMPLEMENTATIONS:
            raise ConfigError(
                f"{what}: config.json sets {key} = {cfg[key]!r}; only the built-in "
                f"{', '.join(sorted(_BUILTIN_IMPLEMENTATIONS))} are accepted (other values make transformers "
                f"load kernel code from the hub); refused, nothing was imported"
            )
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(f"{what}: config.json has no 'model_type' (not a transformers model folder)")
    if kind == "vision" and model_type in VISION_TOWERS:
        return model_type
    if model_type not in MODEL_TYPES[kind]:
        other = _kind_of(model_type)
        found = f"a {model_type!r} model ({_WHAT[other]})" if other else f"a {model_type!r} model"
        raise ConfigError(
            f"{what} holds {found}; {option} expects {_WHAT[kind]} of type {', '.join(MODEL_TYPES[kind])}"
        )
    return model_type


# ---------------------------------------------------------------------------------------------- configs
def export_config(config: Any) -> dict[str, Any]:
    """A ``transformers`` config as plain JSON data, without paths, label tables or code references."""
    data = json.loads(config.to_json_string(use_diff=False))
    return {k: v for k, v in data.items() if k not in _DROP_KEYS and k not in _CODE_KEYS and not k.startswith("_")}


def _check_numbers(value: Any, key: str, where: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}.{key} = {value}: expected a finite number")
        low, high = _LIMITS.get(key, (-_MAX_NUMBER, _MAX_NUMBER))
        if not low <= value <= high:
            raise ConfigError(f"{where}.{key} = {value}: expected a value in [{low}, {high}]")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_numbers(v, key, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(v, str(k), f"{where}.{key}")


def check_config(config: Any, kind: str, source: str) -> dict[str, Any]:
    """Validate an untrusted stored config (plain data) before anything is built from it.

    Returns:
        The config without its ``model_type`` entry, ready for ``AutoConfig.for_model``.

    Raises:
        ConfigError: not a plain dict, a ``model_type`` outside :data:`MODEL_TYPES` for ``kind``, a key naming
            code, or a number out of bounds (the message names ``source`` and the field). A ``ConfigError``
            because the config arrives as a hyper-parameter: ``core.io.rebuild`` adds the file's name.
    """
    where = f"{source}: pretrained config"
    if not isinstance(config, dict):
        raise ConfigError(f"{where} is a {type(config).__name__}, expected an object")
    try:
        check_plain(config, where)
    except CheckpointError as err:
        raise ConfigError(str(err)) from None
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES[kind]:
        raise ConfigError(f"{where}: model_type {model_type!r} is not one of {', '.join(MODEL_TYPES[kind])}")
    bad = sorted(k for k in config if k in _CODE_KEYS or k in _IMPLEMENTATION_KEYS)
    if bad:
        raise ConfigError(f"{where}: holds {bad[0]!r}, which names code to load; refused (nothing was imported)")
    for key, value in config.items():
        _check_numbers(value, key, where)
    return {k: v for k, v in config.items() if k != "model_type" and k not in _DROP_KEYS and not k.startswith("_")}


def _auto_class(kind: str) -> Any:
    import transformers

    return transformers.AutoModelForSeq2SeqLM if kind == "translation" else transformers.AutoModel


def build_from_config(
    config: Mapping[str, Any], kind: str, source: str, overrides: Mapping[str, Any] | None = None, **model_kwargs: Any
) -> nn.Module:
    """Rebuild a pretrained part from its stored config, offline (random weights: the caller loads its own).

    Args:
        config: :func:`export_config` output read back from a checkpoint (untrusted: checked here).
        kind: ``vision``, ``speech`` or ``translation``.
        source: the checkpoint or folder, for messages.
        overrides: config entries the task imposes (as in :func:`load_pretrained`).
        **model_kwargs: constructor options (e.g. ``add_pooling_layer=False``).

    Raises:
        ConfigError: see :func:`check_config`, or a config ``transformers`` refuses.
    """
    from transformers import AutoConfig

    fields = {**check_config(dict(config), kind, source), **(overrides or {})}
    model_type = str(config["model_type"])
    try:
        hf_config = AutoConfig.for_model(model_type, **fields)
        if model_type == "whisper":  # only the encoder is used (see tasks.speech.hf_encoder)
            from transformers import WhisperConfig
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            assert isinstance(hf_config, WhisperConfig)  # AutoConfig.for_model("whisper") builds one
            return WhisperEncoder(hf_config).float()
        return _auto_class(kind).from_config(hf_config, trust_remote_code=False, **model_kwargs).float()
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as err:
        raise ConfigError(
            f"{source}: its pretrained {model_type} config does not build a model ({type(err).__name__}: {err})"
        ) from None


def load_pretrained(
    folder: Path, kind: str, option: str, overrides: Mapping[str, Any] | None = None, **model_kwargs: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a pretrained model's weights from a local folder with ``transformers`` (no remote code).

    A full CLIP / SigLIP folder gives its vision tower; a Whisper folder gives its encoder.

    Args:
        folder: from :func:`resolve_pretrained`.
        kind: ``vision``, ``speech`` or ``translation``.
        option: the option that named it, for messages.
        overrides: config entries the task imposes (e.g. ``{"layerdrop": 0.0}``); kept in the returned config,
            so a rebuild gets them too.
        **model_kwargs: constructor options passed to ``from_pretrained``.

    Returns:
        ``(model in float32, its config as plain data)``.

    Raises:
        ConfigError: wrong kind of model, missing files, or weights that do not fit the folder's config
            (e.g. mismatched hidden sizes); the message names the folder.
    """
    from transformers import AutoConfig

    model_type = read_model_type(folder, kind, option)
    what = f"{option}={folder}"
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        if model_type in VISION_TOWERS:
            config = config.vision_config
        for key, value in (overrides or {}).items():
            setattr(config, key, value)
        model = _auto_class(kind).from_pretrained(
            folder, config=config, local_files_only=True, trust_remote_code=False, dtype=torch.float32, **model_kwargs
        )
    except pickle.UnpicklingError:
        raise ConfigError(
            f"{what}: its weights are a pickle (pytorch_model.bin) holding more than plain tensors, and "
            f"unpickling them could run code; refused. Use a folder with model.safetensors"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"{what}: cannot load the {model_type} model ({type(err).__name__}: {' '.join(str(err).split())[:300]})"
        ) from None
    except RuntimeError as err:  # transformers raises it for weights whose shapes differ from config.json
        raise ConfigError(
            f"{what}: its weights do not fit its config.json (mismatched sizes, e.g. hidden_size; "
            f"see the load report above): {' '.join(str(err).split())[:200]}"
        ) from None
    if model_type == "whisper":
        model = model.get_encoder()  # the decoder is never used: do not keep it
    return model.float(), export_config(config)
