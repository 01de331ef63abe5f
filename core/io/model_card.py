"""The generated ``README.md`` model card of a model folder (Hugging Face card layout: YAML header + text)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["model_card"]

_PIPELINE = {"translation": "translation", "captioning": "image-to-text", "speech": "automatic-speech-recognition"}
_CLI = {
    "translation": ("attn-translate", "translate", '"I love you"'),
    "captioning": ("attn-caption", "caption", "photo.jpg"),
    "speech": ("attn-asr", "transcribe", "speech.wav"),
}
_LIBRARY_CALL = {
    "translation": 'model.translate(["I love you"])',
    "captioning": 'model.caption(["photo.jpg"])',
    "speech": 'model.transcribe(["speech.wav"])',
}
_ARCH_KEYS = (
    "arch",
    "encoder",
    "decoder",
    "rnn_type",
    "attention",
    "attention_options",
    "embed_dim",
    "emb_dim",
    "hidden_dim",
    "encoder_dim",
    "encoder_layers",
    "decoder_layers",
    "num_heads",
    "ffn_dim",
    "grid_size",
)


def _fmt(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def model_card(model: Any, config: Mapping[str, Any], figure: str | None) -> str:
    """Markdown model card of ``model`` from the folder's ``config`` (real metrics only, none invented).

    Args:
        model: the task module being exported.
        config: the folder's config.json contents (hyper-parameters, metrics, training info).
        figure: file name of the attention figure inside the folder, or None.
    """
    task = str(config["task"])
    hp = config.get("hyper_parameters") or {}
    metrics: Mapping[str, Any] = config.get("metrics") or {}
    training: Mapping[str, Any] = config.get("training") or {}
    module = type(model)
    cli, sub, example = _CLI.get(task, ("attn-" + task, "predict", "INPUT"))
    lines = [
        "---",
        "library_name: attn-suite",
        "license: mit",
        f"pipeline_tag: {_PIPELINE.get(task, task)}",
        f"tags: [attn-suite, attention, {task}, {hp.get('attention', 'attention')}]",
        "---",
        "",
        f"# attn-suite {task} model",
        "",
        f"A `{module.__name__}` trained with attn-suite (task `{task}`, checkpoint format "
        f"{config.get('format')}). The weights are in `model.safetensors`; nothing in this folder is pickled, "
        "and loading it never runs code from the folder.",
        "",
        "## Architecture",
        "",
        "| setting | value |",
        "| --- | --- |",
    ]
    lines += [f"| `{k}` | `{_fmt(hp[k])}` |" for k in _ARCH_KEYS if k in hp]
    pretrained = (config.get("metadata") or {}).get("pretrained")
    if isinstance(pretrained, dict):  # a transformers model inside (core.io.pretrained): name where it came from
        lines.append(f"| pretrained | `{pretrained.get('source')}` ({pretrained.get('model_type')}) |")
    n_params = sum(p.numel() for p in model.parameters())
    lines += [f"| parameters | {n_params:,} |", ""]
    lines += ["## Training", ""]
    data = training.get("data")
    command = training.get("command")
    lines.append(f"- data: {_fmt(data)}" if data else "- data: not recorded")
    lines.append(f"- command: `{command}`" if command else "- command: not recorded")
    if training.get("steps") is not None:
        lines.append(f"- optimizer steps: {training['steps']}")
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| `{k}` | {float(v):.2f} |" for k, v in sorted(metrics.items())]
        lines.append("")
        lines.append("Split and number of examples are part of each metric's name (e.g. `test/bleu`).")
    else:
        lines.append("No metrics were recorded with this model.")
    lines.append("")
    if figure:
        lines += ["## Attention", "", f"![attention of one example]({figure})", ""]
    lines += [
        "## Use",
        "",
        "```bash",
        "pip install attn-suite",
        f"{cli} {sub} --ckpt hf://ORG/NAME {example}      # or --ckpt path/to/this/folder",
        "```",
        "",
        "```python",
        f"from {module.__module__} import {module.__name__}",
        f'model = {module.__name__}.from_pretrained("path/to/this/folder")   # or "hf://ORG/NAME"',
        _LIBRARY_CALL.get(task, "model(...)"),
        "```",
        "",
        "## Licence",
        "",
        "The model code is MIT-licensed. The weights inherit the terms of the training data named above"
        + (" and of the pretrained model they were fine-tuned from." if isinstance(pretrained, dict) else "."),
        "",
    ]
    return "\n".join(lines)
