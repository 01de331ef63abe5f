"""What each tab of the app computes, without Gradio: input checks, model calls, figures.

Every function takes plain values (text, file paths, numbers) and returns plain values (strings,
table rows, PIL images), so the checks and outputs are tested without a server, and the Gradio layer
(:mod:`tasks.app.app`) only wires components to them. Bad input raises :class:`AppInputError`, whose
message says what was expected; the app shows it in the page.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from PIL import Image

from core.errors import ConfigError, UserError
from core.io.hparams import BEAM
from core.viz import plot_alignment, plot_image_attention, plot_spectrogram_alignment

__all__ = [
    "DEFAULT_LIMITS",
    "AppInputError",
    "Limits",
    "TabResult",
    "example_images",
    "figure_image",
    "read_audio",
    "read_image",
    "run_captioning",
    "run_speech",
    "run_translation",
    "split_sentences",
]

ImageItem = tuple[Image.Image, str]


class AppInputError(UserError):
    """Input the app cannot use (empty, wrong kind, too large); the message is shown in the page."""


@dataclass(frozen=True)
class Limits:
    """Size limits of what the app accepts (the CLI exposes them as options).

    Attributes:
        max_sentences: lines translated per request.
        max_chars: characters per line.
        max_upload_mb: size of one uploaded file (the server also rejects larger uploads).
        max_audio_seconds: audio duration.
        max_beam: largest beam size offered (at most the CLI's bound, 128).

    Raises:
        core.errors.ConfigError: a limit that is not positive (or a beam bound above 128).
    """

    max_sentences: int = 8
    max_chars: int = 400
    max_upload_mb: float = 10.0
    max_audio_seconds: float = 30.0
    max_beam: int = 10

    def __post_init__(self) -> None:
        for name in ("max_sentences", "max_chars", "max_beam"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"app limit {name} must be a whole number >= 1, got {value!r}")
        for name in ("max_upload_mb", "max_audio_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ConfigError(f"app limit {name} must be a positive number, got {value!r}")
        if self.max_beam > BEAM[1]:
            raise ConfigError(f"app limit max_beam must be between {BEAM[0]} and {BEAM[1]}, got {self.max_beam}")


DEFAULT_LIMITS = Limits()


@dataclass
class TabResult:
    """The outputs of one request: the text, the n-best rows, the figures (with captions) and notes for the
    user (e.g. words the model never saw: its output for them is a guess)."""

    text: str
    nbest: list[list[Any]]
    figures: list[ImageItem] = field(default_factory=list)
    details: list[ImageItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def figure_image(fig: Figure) -> Image.Image:
    """Render a Matplotlib figure (from core.viz) to an RGB PIL image."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # labels may hold glyphs the font lacks: cosmetic, not worth a warning
        warnings.simplefilter("ignore")
        fig.savefig(buf, format="png", bbox_inches="tight", dpi=90)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _shown(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters (an API client can send a 4,000-digit number)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text)} characters)"


def _whole(value: Any, what: str, top: int | None) -> int:
    """``value`` as an int in ``[1, top]``; an integral float (``3.0``) or a short decimal string counts."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) <= 6:
        number = int(value.strip())
    if number is None or number < 1 or (top is not None and number > top):
        bound = f"between 1 and {top}" if top is not None else "at least 1"
        raise AppInputError(f"{what} must be {bound} (a whole number), got {_shown(value)}")
    return number


def _beam_nbest(beam: Any, nbest: Any, limits: Limits) -> tuple[int, int]:
    """Beam size and n-best as ints: beam in ``[1, max_beam]``; n-best in ``[1, beam]`` (capped, not an error).

    The values come from the page's sliders or from any HTTP client: anything but a whole number in range
    (a string, ``NaN``, ``1e6``, ``10**6``, ``True``) is an :class:`AppInputError` naming the field and the bound.
    """
    b = _whole(beam, "beam size", limits.max_beam)
    n = _whole(nbest, "n-best", None)
    return b, min(n, b)


def _check_file(value: Any, what: str, expected: str, limits: Limits) -> tuple[Path, str]:
    """The uploaded file's path and the name to show for it, after the presence and size checks.

    ``value`` is a path, or a Gradio file payload (a dict with ``path`` and ``orig_name``) where the app
    skips Gradio's own decoding to report unreadable files itself.
    """
    name = None
    if isinstance(value, dict):
        name, value = value.get("orig_name"), value.get("path")
    if not value:
        raise AppInputError(f"no {what} given: {expected}")
    p = Path(str(value))
    name = name or p.name
    if not p.is_file():
        raise AppInputError(f"the {what} upload {name} is missing on the server; upload it again")
    size = p.stat().st_size
    if size == 0:
        raise AppInputError(f"the {what} file {name} is empty (0 bytes): {expected}")
    if size > limits.max_upload_mb * 2**20:  # MB as Gradio's max_file_size counts them (MiB)
        raise AppInputError(
            f"the {what} file {name} is {size / 2**20:.1f} MB; this app accepts up to {limits.max_upload_mb:g} MB"
        )
    return p, name


# ---------------------------------------------------------------------------------------------- translation
def split_sentences(text: Any, limits: Limits) -> list[str]:
    """The non-empty lines of ``text``, checked against the limits."""
    if not isinstance(text, str) or not text.strip():
        raise AppInputError("no text to translate: type one English sentence per line")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > limits.max_sentences:
        raise AppInputError(
            f"{len(lines)} lines given; this app translates up to {limits.max_sentences} "
            f"sentences (one per line) per request"
        )
    for i, ln in enumerate(lines, 1):
        if len(ln) > limits.max_chars:
            raise AppInputError(f"line {i} has {len(ln)} characters; the limit is {limits.max_chars} per sentence")
    return lines


def _layer_head_figures(model: Any, k: int, source: str, hyp: Any) -> list[ImageItem]:
    """Heatmaps of every layer (Transformer) and head (multi-head) of one hypothesis; [] for one head, one layer."""
    from tasks.translation.heads import layer_head_attention, target_ids

    ids = model.src_tokenizer.encode(source)[: model.max_source_tokens]
    layers = layer_head_attention(model, ids, target_ids(model.tgt_tokenizer, hyp.tgt_tokens))
    if len(layers) == 1 and layers[0].shape[0] == 1:
        return []
    out = []
    for li, w in enumerate(layers, 1):
        where = f"layer {li}/{len(layers)}" if len(layers) > 1 else "attention"
        panels = [("mean of heads", w.mean(0))] if w.shape[0] > 1 else []
        panels += [(f"head {h + 1}", w[h]) for h in range(w.shape[0])]
        for name, weights in panels:
            title = f"{k}: {where}, {name}"
            out.append((figure_image(plot_alignment(weights, hyp.src_tokens, hyp.tgt_tokens, title=title)), title))
    return out


def run_translation(model: Any, text: Any, beam: Any, nbest: Any, limits: Limits = DEFAULT_LIMITS) -> TabResult:
    """Translate the lines of ``text``.

    Returns:
        ``text``: one translation per line; ``nbest``: rows ``[line, rank, translation, score]``;
        ``figures``: the alignment of each line's best translation; ``details``: per layer and head.
    """
    sentences = split_sentences(text, limits)
    b, n = _beam_nbest(beam, nbest, limits)
    results = model.translate(sentences, beam=b, nbest=n, return_attention=True)
    results = [r if isinstance(r, list) else [r] for r in results]
    rows = [[i, rank, h.text, round(h.score, 4)] for i, hyps in enumerate(results, 1) for rank, h in enumerate(hyps, 1)]
    figures, details, notes = [], [], []
    engine = getattr(model, "engine", "pytorch")
    if engine != "pytorch":  # an export holds the averaged alignment only, not every layer and head
        notes.append(f"this model runs on {engine}: per-layer and per-head views need its PyTorch model folder")
    for i, (src, hyps) in enumerate(zip(sentences, results, strict=True), 1):
        best = hyps[0]
        title = f"{i}: {src} → {best.text}"
        unknown = model.unknown_words(src)
        if unknown:  # a careful toolkit says when its output is a guess
            notes.append(f"line {i}: never seen in training: {', '.join(unknown)} (their translation is a guess)")
            title += f" (never seen in training: {', '.join(unknown)})"
        if best.attention is not None:
            figures.append(
                (figure_image(plot_alignment(best.attention, best.src_tokens, best.tgt_tokens, title=title)), title)
            )
        if engine == "pytorch":
            details += _layer_head_figures(model, i, src, best)
    return TabResult("\n".join(h[0].text for h in results), rows, figures, details, notes)


# ---------------------------------------------------------------------------------------------- captioning
def read_image(path: Any, limits: Limits) -> Image.Image:
    """Decode an uploaded image to RGB (any format PIL reads), with a clear message for anything else."""
    from tasks.captioning.images import ImageError, load_rgb

    p, name = _check_file(path, "image", "upload, paste or drop a PNG, JPEG, WebP, GIF or BMP image", limits)
    try:
        return load_rgb(p)
    except ImageError as err:  # its message names the server's temporary path: show the upload's name
        why = str(err).replace(str(p), name)
        raise AppInputError(
            f"{name} is not an image this app can read (expected PNG, JPEG, WebP, GIF or BMP): {why}"
        ) from None


def run_captioning(model: Any, image_path: Any, beam: Any, nbest: Any, limits: Limits = DEFAULT_LIMITS) -> TabResult:
    """Caption one image.

    Returns:
        ``text``: the best caption; ``nbest``: rows ``[rank, caption, score]``; ``figures``: the per-word
        attention grid; ``details``: one overlay per word (captioned with the word).
    """
    from tasks.captioning.images import shown_image

    image = read_image(image_path, limits)
    b, n = _beam_nbest(beam, nbest, limits)
    hyps = model.caption_images([image], beam=b, nbest=n)[0]  # Caption(text, score, words, attention), best first
    captions = [h.text for h in hyps]
    rows = [[rank, h.text, round(h.score, 4)] for rank, h in enumerate(hyps, 1)]
    shown = shown_image(image, int(model.image_size))  # the image as the network saw it
    best = hyps[0]
    figures, details = [], []
    if best.attention is not None and best.words:
        maps = best.attention  # (T, g, g)
        figures.append((figure_image(plot_image_attention(shown, maps, best.words)), best.text))
        for t, word in enumerate(best.words):
            details.append((figure_image(plot_image_attention(shown, maps[t : t + 1], [word], ncols=1)), word))
    return TabResult(captions[0], rows, figures, details)


def example_images(folder: Path, count: int = 3, image_size: int = 128) -> list[Path]:
    """Write ``count`` generated scenes (the captioning task's embedded test set) as PNGs; returns their paths."""
    from tasks.captioning.scenes import make_scene

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"scene_{i}.png"
        if not path.is_file():
            make_scene(0, "test", i, image_size=max(48, image_size)).image.save(path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------- speech
def read_audio(path: Any, limits: Limits) -> Any:
    """Decode an uploaded or recorded audio file to mono 16 kHz, rejecting empty, silent and too long audio."""
    from core.errors import DataError
    from tasks.speech.audio import SAMPLE_RATE, audio_info, load_audio

    expected = "upload a WAV, FLAC or OGG file, or record from the microphone"
    p, name = _check_file(path, "audio", expected, limits)
    try:
        seconds = audio_info(p)  # from the header: refuse long audio before decoding it
    except DataError:
        raise AppInputError(f"{name} is not audio this app can read: {expected}") from None
    if seconds > limits.max_audio_seconds:
        raise AppInputError(f"{name} is {seconds:.1f} s long; this app accepts up to {limits.max_audio_seconds:g} s")
    try:
        wav = load_audio(p, max_seconds=limits.max_audio_seconds)  # a header may lie: decoding stops at the limit
    except DataError as err:  # its message names the server's temporary path: show the upload's name
        raise AppInputError(f"{str(err).replace(str(p), name)} ({expected})") from None
    if wav.numel() < SAMPLE_RATE // 10:
        raise AppInputError(f"{name} is {wav.numel() / SAMPLE_RATE * 1000:.0f} ms long; give at least 0.1 s")
    if float(wav.abs().max()) < 1e-4:  # below -80 dBFS: nothing to transcribe
        raise AppInputError(f"{name} is silent (peak below -80 dBFS); record or upload speech")
    return wav


def run_speech(model: Any, audio_path: Any, beam: Any, nbest: Any, limits: Limits = DEFAULT_LIMITS) -> TabResult:
    """Transcribe one recording.

    Returns:
        ``text``: the transcript; ``nbest``: rows ``[rank, transcript, score]``; ``figures``: the
        spectrogram with the alignment under it, one per chunk the audio was cut into.
    """
    from tasks.speech.audio import SAMPLE_RATE

    wav = read_audio(audio_path, limits)
    b, n = _beam_nbest(beam, nbest, limits)
    res = model.transcribe([(wav, SAMPLE_RATE)], beam=b, nbest=n, return_attention=True)[0]
    rows = [[rank, t, round(s, 4)] for rank, (t, s) in enumerate(res.nbest, 1)]
    figures = []
    for c in res.chunks:
        title = f"{c.start:.1f} s: {''.join(c.tokens)}"
        figures.append((figure_image(plot_spectrogram_alignment(c.spec, c.weights, c.tokens, title=title)), title))
    return TabResult(res.text, rows, figures)
