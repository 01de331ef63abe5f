"""Embedded speech corpus synthesised offline with eSpeak NG (optional GPL-3.0 extra).

eSpeak NG is reached through the PyPI package `espeakng-loader`, which ships `libespeak-ng.so`
and its voice data; we call the C API through ctypes in synchronous mode with a synth callback,
so no system package is needed. The library is GPL-3.0, hence an optional extra:
`pip install "attn-suite[speech]"`.

Determinism: eSpeak NG keeps internal state across utterances (pitch flutter phase, noise
generator), so the same text synthesised twice in one process differs by a few LSBs. The same
*sequence* of calls in a fresh process is bit-identical, so corpus generation runs in one freshly
spawned worker process that synthesises the utterances in a fixed order. Noise, gains and all
other randomness come from seeded generators in the parent.

Word timings: the synth callback also receives eSpeak's event list, and each ``espeakEVENT_WORD`` names
the sample at which the word's first phoneme is generated (and the word's position in the text). A word's
span runs from its start to the next word's start (the last word's to the end of speech), so the short
pauses and stop closures before a word belong to it. The post-processing only resamples (a zero-phase
filter: times are unchanged), scales and adds noise, so the times hold for the 16 kHz corpus audio too.
The corpus manifests store them as ``"words": [[word, start_s, end_s], ...]``, one per word of ``text``.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError
from tasks.speech.text import sample_corpus_texts

__all__ = [
    "ACCENTS",
    "TEST_VARIANTS",
    "TRAIN_VARIANTS",
    "VAL_VARIANTS",
    "EspeakUnavailable",
    "VoiceSpec",
    "WordSpan",
    "default_cache_dir",
    "generate_corpus",
    "synthesize",
    "synthesize_many",
    "synthesize_with_words",
    "word_spans",
]

ESPEAK_SAMPLE_RATE = 22050
TARGET_SAMPLE_RATE = 16000

# English accents shipped with eSpeak NG; every split uses all of them.
ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan"]
# Voice variants (formant/pitch/breathiness presets). The three sets are disjoint: the test split's
# variants never occur in training (nor in validation), which is what "unseen voices" means here.
TRAIN_VARIANTS = ["", "m1", "m2", "m4", "m5", "m7", "f1", "f3", "f5", "klatt", "klatt3", "klatt5"]
VAL_VARIANTS = ["m3", "f2", "klatt6"]
TEST_VARIANTS = ["m6", "m8", "f4", "klatt2"]

# espeak_AUDIO_OUTPUT / espeak_PARAMETER / flags values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
# espeak_EVENT_TYPE values: the list terminator, the start of a word, the end of a clause or sentence.
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_END = 0, 1, 5
#: Version of the word timings in a corpus' manifests (``meta.json`` "word_spans"); a cached corpus without
#: them gets them added in place (`generate_corpus`).
WORD_SPANS_VERSION = 1

#: One word of an utterance and its span in the audio: ``(word, start seconds, end seconds)``.
WordSpan = tuple[str, float, float]


class EspeakUnavailable(UserError, ImportError):
    """Raised when the optional `espeakng-loader` package (eSpeak NG, GPL-3.0) is missing.

    A `UserError` (the CLI prints the install hint without a traceback) and an `ImportError`
    (tests can `pytest.importorskip`-style skip on it).
    """


def _load_loader() -> Any:
    """Import `espeakng_loader` lazily, with an actionable message when it is absent."""
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise EspeakUnavailable(
            "the embedded speech corpus needs eSpeak NG: install the optional (GPL-3.0) extra with "
            '`pip install "attn-suite[speech]"` (package `espeakng-loader`), or train on your own '
            "audio with configs/speech/librispeech.yaml or configs/speech/manifest.yaml"
        ) from e
    return espeakng_loader


@dataclass(frozen=True)
class VoiceSpec:
    """One eSpeak NG voice setting.

    Attributes:
        accent: eSpeak language/accent name, e.g. "en-us".
        variant: voice variant ("m3", "f2", "klatt", ... or "" for the accent's default voice).
        rate: speaking rate in words per minute (eSpeak default 175).
        pitch: base pitch 0-100 (default 50).
        pitch_range: pitch range 0-100 (default 50; 0 = monotone).
    """

    accent: str = "en-us"
    variant: str = ""
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50

    @property
    def name(self) -> str:
        """The name given to `espeak_SetVoiceByName` ("accent+variant")."""
        return f"{self.accent}+{self.variant}" if self.variant else self.accent


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of speak_lib.h (eSpeak NG 1.52; the layout has been stable since eSpeak 1.4x)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character position of the word in the text
        ("length", ctypes.c_int),  # characters of the word (WORD events)
        ("audio_position", ctypes.c_int),  # milliseconds (rounded down) from the start of the speech
        ("sample", ctypes.c_int),  # the same time as a sample index at the synthesiser's rate: exact
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),  # a union of int / const char * / char[8]
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _Espeak:
    """Minimal ctypes binding of the eSpeak NG C API (synchronous mode, one instance per process)."""

    _instance: _Espeak | None = None

    def __init__(self) -> None:
        loader = _load_loader()
        self.lib = ctypes.CDLL(loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        sr = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, loader.get_data_path().encode(), 0)
        if sr <= 0:
            raise RuntimeError(f"espeak_Initialize failed (returned {sr}); data path {loader.get_data_path()}")
        self.sample_rate = int(sr)
        self._chunks: list[np.ndarray] = []
        # (0-based character position, sample) of every word start, and the sample of every clause end.
        self._words: list[tuple[int, int]] = []
        self._ends: list[int] = []
        # Keep a reference to the ctypes callback: if it were garbage-collected the C side would
        # call freed memory.
        self._cb = _CALLBACK(self._on_audio)
        self.lib.espeak_SetSynthCallback(self._cb)

    @classmethod
    def get(cls) -> _Espeak:
        """The process-wide instance (the C library has global state; initialise it once)."""
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _on_audio(self, wav: Any, n: int, events: Any) -> int:
        """Synth callback: copy each chunk of int16 samples out of eSpeak's buffer, and note the word starts
        and clause ends of its event list (terminated by an event of type 0)."""
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events and events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_WORD:
                self._words.append((ev.text_position - 1, ev.sample))
            elif ev.type == _EVENT_END:
                self._ends.append(ev.sample)
            i += 1
        return 0  # 0 = continue synthesis

    def synth(self, text: str, voice: VoiceSpec, seed: int = 0) -> np.ndarray:
        """Synthesise `text` with `voice`; returns int16 samples `(N,)` at `self.sample_rate`.

        The word starts and clause ends of this utterance are left in `_words` and `_ends` (`word_spans`).
        """
        if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice.name!r}")
        self.lib.espeak_SetParameter(_PARAM_RATE, int(voice.rate), 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, int(voice.pitch), 0)
        self.lib.espeak_SetParameter(_PARAM_RANGE, int(voice.pitch_range), 0)
        self.lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
        # The breath/aspiration noise of some variants (f2, f3, f5, ...) draws from a generator that
        # espeak_Initialize seeds from the clock: reseed it so the same job gives the same audio.
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        data = text.encode("utf-8")
        self._chunks, self._words, self._ends = [], [], []
        err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with status {err} for {text!r}")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)


def word_spans(
    text: str, starts: Sequence[tuple[int, int]], ends: Sequence[int], n_samples: int, sample_rate: int
) -> list[WordSpan] | None:
    """Time span of every whitespace-separated word of `text`, from eSpeak's word events.

    A word starts at the first word event inside its characters (eSpeak may report two for one written word,
    e.g. "42" is spoken "forty two"); it ends where the next word starts, the last word at the end of speech
    (the last clause end, else the end of the audio).

    Args:
        text: the synthesised text.
        starts: `(0-based character position, sample)` of each word event, in order.
        ends: samples of the clause-end events.
        n_samples: length of the synthesised audio.
        sample_rate: its rate.

    Returns:
        `[(word, start s, end s), ...]` (times rounded to 0.1 ms), one per word of ``text.split()``; None when
        a word got no event (then its start is unknown).
    """
    words: list[tuple[str, int, int]] = []  # (word, first char, end char)
    pos = 0
    for w in text.split():
        pos = text.index(w, pos)
        words.append((w, pos, pos + len(w)))
        pos += len(w)
    first: list[int | None] = [None] * len(words)
    for char, sample in starts:
        for k, (_, a, b) in enumerate(words):
            if a <= char < b and first[k] is None:
                first[k] = sample
    if not words or any(s is None for s in first):
        return None
    bounds = [min(int(s), n_samples) for s in first if s is not None]
    speech_end = min(max(ends), n_samples) if ends else n_samples
    bounds.append(max(speech_end, bounds[-1]))
    return [
        (w, round(bounds[k] / sample_rate, 4), round(bounds[k + 1] / sample_rate, 4))
        for k, (w, _, _) in enumerate(words)
    ]


def synthesize(text: str, voice: VoiceSpec | None = None) -> tuple[np.ndarray, int]:
    """Synthesise one utterance in this process.

    Args:
        text: the sentence to speak.
        voice: voice settings (default: en-us at default rate and pitch).

    Returns:
        `(waveform, sample_rate)`: float32 samples in [-1, 1], shape `(N,)`, at 22.05 kHz.

    Raises:
        EspeakUnavailable: `espeakng-loader` is not installed.
    """
    wav = _Espeak.get().synth(text, voice or VoiceSpec())
    return wav.astype(np.float32) / 32768.0, _Espeak.get().sample_rate


def synthesize_with_words(text: str, voice: VoiceSpec | None = None) -> tuple[np.ndarray, int, list[WordSpan] | None]:
    """`synthesize`, plus where each word of `text` is in the audio.

    Args:
        text: the sentence to speak.
        voice: voice settings (default: en-us at default rate and pitch).

    Returns:
        `(waveform, sample_rate, words)`: the waveform and rate of `synthesize`, and `word_spans` of the text
        (`[(word, start s, end s), ...]`, or None when eSpeak reported no start for some word).
    """
    eng = _Espeak.get()
    wav = eng.synth(text, voice or VoiceSpec())
    spans = word_spans(text, eng._words, eng._ends, len(wav), eng.sample_rate)
    return wav.astype(np.float32) / 32768.0, eng.sample_rate, spans


def _worker_synth(jobs: list[tuple[str, dict[str, Any]]], with_words: bool = False) -> list[Any]:
    """Pool worker: synthesise `(text, voice fields)` jobs in order (int16 arrays, or `(array, word spans)`)."""
    eng = _Espeak.get()
    out: list[Any] = []
    for text, voice in jobs:
        wav = eng.synth(text, VoiceSpec(**voice))
        out.append((wav, word_spans(text, eng._words, eng._ends, len(wav), eng.sample_rate)) if with_words else wav)
    return out


def _spawn_pool() -> Any:
    """A fresh single-process spawn pool (see the module docstring for why fresh and single)."""
    return mp.get_context("spawn").Pool(1)


def synthesize_many(
    jobs: Sequence[tuple[str, VoiceSpec]], chunk_size: int = 64, with_words: bool = False
) -> Iterator[list[Any]]:
    """Synthesise many utterances deterministically in a fresh worker process.

    Args:
        jobs: `(text, voice)` pairs, synthesised in this order.
        chunk_size: utterances per round trip to the worker (granularity of progress updates).
        with_words: also return each utterance's `word_spans` (the audio is the same either way).

    Yields:
        Lists of int16 waveforms `(N_i,)` at 22.05 kHz, one list per chunk, in job order; with `with_words`,
        lists of `(waveform, word spans or None)`.

    Raises:
        EspeakUnavailable: `espeakng-loader` is not installed.
    """
    _load_loader()  # fail fast in the parent with the install hint
    payload = [(t, asdict(v)) for t, v in jobs]
    chunks = [payload[i : i + chunk_size] for i in range(0, len(payload), chunk_size)]
    with _spawn_pool() as pool:
        # imap on a 1-process pool runs the chunks in order in one process -> bit-identical output.
        yield from pool.imap(functools.partial(_worker_synth, with_words=with_words), chunks)


def default_cache_dir() -> Path:
    """Root of generated data: `$ATTN_SUITE_CACHE` or `~/.cache/attn-suite`."""
    return Path(os.environ.get("ATTN_SUITE_CACHE", Path.home() / ".cache" / "attn-suite"))


def _sample_voice(rng: random.Random, variants: Sequence[str]) -> VoiceSpec:
    """Random voice: accent, variant, rate, pitch and pitch range from the given variant set."""
    return VoiceSpec(
        accent=rng.choice(ACCENTS),
        variant=rng.choice(list(variants)),
        rate=rng.randint(135, 215),
        pitch=rng.randint(25, 75),
        pitch_range=rng.randint(30, 80),
    )


def _postprocess(wav: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float]) -> np.ndarray:
    """int16 22.05 kHz -> float32 16 kHz with random gain and additive white noise at a random SNR."""
    import torch

    from tasks.speech.audio import resampler

    x = torch.from_numpy(wav.astype(np.float32) / 32768.0)
    y = resampler(ESPEAK_SAMPLE_RATE, TARGET_SAMPLE_RATE)(x).numpy()
    power = float(np.mean(y**2)) + 1e-12
    snr = rng.uniform(*snr_db)
    noise = rng.standard_normal(y.shape[0]).astype(np.float32) * np.sqrt(power / 10 ** (snr / 10))
    y = (y + noise) * rng.uniform(0.5, 1.0)
    peak = float(np.abs(y).max()) if y.size else 0.0
    return (y / peak * 0.95 if peak > 0.99 else y).astype(np.float32)


def _corpus_key(cfg: dict[str, Any]) -> str:
    """Stable short hash of the generation settings (cache directory name)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def generate_corpus(
    root: str | Path | None = None,
    *,
    seed: int = 0,
    num_train: int = 3000,
    num_val: int = 200,
    num_test: int = 300,
    digit_fraction: float = 0.25,
    snr_db: tuple[float, float] = (15.0, 40.0),
    progress: bool | Callable[[int, int], None] = True,
) -> Path:
    """Generate (once) and cache the synthesised corpus; return its directory.

    The directory holds `train.jsonl`, `val.jsonl`, `test.jsonl` manifests (`path`, `text`,
    `duration`, `voice`, and `words`: `[[word, start s, end s], ...]` where eSpeak reported every word) and
    16 kHz FLAC files. Generation is skipped when a complete corpus for the same settings exists (the
    manifests are written last, through an atomic rename of the whole directory, so an interrupted run
    never leaves a half corpus that looks complete). A corpus cached before word timings were recorded
    keeps its directory, audio and texts and gets them added in place (`_add_word_spans`: the utterances
    are synthesised again, without writing audio, a few seconds). Call it from rank 0 only
    (`LightningDataModule.prepare_data`).

    Args:
        root: parent directory of cached corpora (default `default_cache_dir()/speech`).
        seed: corpus seed; the same seed gives bit-identical audio.
        num_train, num_val, num_test: utterances per split.
        digit_fraction: share of digit strings among the transcripts.
        snr_db: range of the additive white-noise SNR in dB.
        progress: show a progress bar (rich); or a callable `(done, total)` called as utterances are
            written (e.g. to report to another display).

    Returns:
        The corpus directory.

    Raises:
        EspeakUnavailable: `espeakng-loader` is not installed and the corpus is not cached.
    """
    cfg = {
        "version": 1,
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "digit_fraction": digit_fraction,
        "snr_db": list(snr_db),
        "accents": ACCENTS,
        "train_variants": TRAIN_VARIANTS,
        "val_variants": VAL_VARIANTS,
        "test_variants": TEST_VARIANTS,
    }
    root = Path(root) if root is not None else default_cache_dir() / "speech"
    out = root / f"synth-{_corpus_key(cfg)}"
    if (out / "meta.json").is_file():
        meta = json.loads((out / "meta.json").read_text())
        if meta.get("word_spans") != WORD_SPANS_VERSION:
            _add_word_spans(out, meta, *_corpus_jobs(cfg))
        return out

    jobs, owners = _corpus_jobs(cfg)
    splits = ("train", "val", "test")
    tmp = root / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "audio").mkdir(parents=True)
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in splits}

    import torch

    t0 = time.time()
    bar = _progress(len(jobs), f"synthesising speech corpus ({len(jobs)} utterances)", progress)
    # One intra-op thread for the small per-utterance resampling convolutions: with more, thread
    # start-up dominates (measured 2 ms vs 80 ms per utterance on a busy 2-core machine).
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _write_all(jobs, owners, rows, tmp, seed, snr_db, bar)
    finally:
        torch.set_num_threads(prev_threads)
    bar(0, done=True)
    for split, r in rows.items():
        with open(tmp / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in r)
    meta = dict(
        cfg,
        seconds=round(time.time() - t0, 1),
        hours={s: round(sum(x["duration"] for x in r) / 3600, 3) for s, r in rows.items()},
        word_spans=WORD_SPANS_VERSION,
    )
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        tmp.rename(out)
    except OSError:  # another process finished first (shared filesystem): keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _corpus_jobs(cfg: dict[str, Any]) -> tuple[list[tuple[str, VoiceSpec]], list[tuple[str, int]]]:
    """The corpus' `(text, voice)` jobs in synthesis order and the `(split, index)` each belongs to.

    Everything is drawn from one generator seeded with ``cfg["seed"]``, so the same settings give the same
    jobs (and, synthesised in this order in a fresh process, the same audio).
    """
    rng = random.Random(cfg["seed"])
    splits = {
        "train": (cfg["num_train"], TRAIN_VARIANTS),
        "val": (cfg["num_val"], VAL_VARIANTS),
        "test": (cfg["num_test"], TEST_VARIANTS),
    }
    jobs: list[tuple[str, VoiceSpec]] = []
    owners: list[tuple[str, int]] = []
    for split, (n, variants) in splits.items():
        texts = sample_corpus_texts(rng, n, cfg["digit_fraction"])
        for i, t in enumerate(texts):
            jobs.append((t, _sample_voice(rng, variants)))
            owners.append((split, i))
    return jobs, owners


def _resampled_length(n: int) -> int:
    """Samples at 16 kHz of `n` samples at 22.05 kHz after `_postprocess` (torchaudio's ceil(n * 16000 / 22050))."""
    return -(-n * TARGET_SAMPLE_RATE // ESPEAK_SAMPLE_RATE)


def _words_field(spans: list[WordSpan] | None, n_samples: int) -> dict[str, Any]:
    """The manifest field of an utterance's word spans, or nothing without them.

    Args:
        spans: `word_spans` of the synthesis.
        n_samples: length of the corpus audio (16 kHz): times are clipped to it (rounded down to 0.1 ms), so
            a span rounded up to 0.1 ms never ends past the audio.
    """
    if spans is None:
        return {}
    end = n_samples * 10_000 // TARGET_SAMPLE_RATE / 10_000
    return {"words": [[w, min(a, end), min(b, end)] for w, a, b in spans]}


def _write_all(
    jobs: list[tuple[str, VoiceSpec]],
    owners: list[tuple[str, int]],
    rows: dict[str, list[dict[str, Any]]],
    tmp: Path,
    seed: int,
    snr_db: tuple[float, float],
    bar: Any,
) -> None:
    """Synthesise every job in the worker, post-process and write FLAC + manifest rows (in order)."""
    import soundfile as sf

    k = 0
    for chunk in synthesize_many(jobs, with_words=True):
        for wav, spans in chunk:
            (text, voice), (split, i) = jobs[k], owners[k]
            y = _postprocess(wav, np.random.default_rng([seed, k]), snr_db)
            rel = f"audio/{split}-{i:05d}.flac"
            sf.write(tmp / rel, y, TARGET_SAMPLE_RATE, subtype="PCM_16")
            rows[split].append(
                {
                    "path": rel,
                    "text": text,
                    "duration": round(len(y) / TARGET_SAMPLE_RATE, 3),
                    "voice": voice.name,
                    "rate": voice.rate,
                    "pitch": voice.pitch,
                    **_words_field(spans, len(y)),
                }
            )
            k += 1
        bar(len(chunk))


def _add_word_spans(
    out: Path, meta: dict[str, Any], jobs: list[tuple[str, VoiceSpec]], owners: list[tuple[str, int]]
) -> None:
    """Add word spans to the manifests of a corpus cached before they were recorded (audio and text unchanged).

    The jobs are synthesised again in a fresh worker, in the same order (the same audio, see the module
    docstring), for their word events only. A row gets spans only when its text is the job's and its
    duration is the new synthesis' (to the millisecond it is stored with): a corpus made by another eSpeak
    NG version or grammar keeps what it has. Each manifest, then ``meta.json``, is replaced atomically, so
    a reader sees either the old file or the new one, and an interrupted upgrade is simply done again next
    time. Without eSpeak NG the corpus is used as it is (it trains; there is nothing to score attention
    against).
    """
    try:
        _load_loader()
    except EspeakUnavailable:
        return
    splits = ("train", "val", "test")
    rows = {
        s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines() if line.strip()] for s in splits
    }
    results = [r for chunk in synthesize_many(jobs, with_words=True) for r in chunk]
    stale = 0
    for (text, _), (split, i), (wav, spans) in zip(jobs, owners, results):
        row = rows[split][i] if i < len(rows[split]) else None
        if row is None:
            continue
        n = _resampled_length(len(wav))
        if row.get("text") != text or row.get("duration") != round(n / TARGET_SAMPLE_RATE, 3):
            stale += 1
            continue
        row.update(_words_field(spans, n))
    if stale:
        warnings.warn(
            f"{out}: {stale} utterance(s) do not match a new synthesis (another eSpeak NG version or grammar?): "
            "they get no word spans",
            stacklevel=3,
        )
    tag = f".tmp-{os.getpid()}"
    try:
        for split, r in rows.items():
            tmp = out / f"{split}.jsonl{tag}"
            tmp.write_text("".join(json.dumps(row) + "\n" for row in r))
            os.replace(tmp, out / f"{split}.jsonl")
        tmp = out / f"meta.json{tag}"
        tmp.write_text(json.dumps(dict(meta, word_spans=WORD_SPANS_VERSION), indent=1))
        os.replace(tmp, out / "meta.json")
    except OSError as e:  # e.g. a read-only shared cache: the corpus still trains, without word spans
        warnings.warn(f"{out}: could not add word spans to the cached corpus ({e})", stacklevel=3)


def _progress(total: int, desc: str, enabled: bool | Callable[[int, int], None]) -> Any:
    """A tiny progress-bar callable over rich (falls back to nothing when disabled/unavailable).

    A callable `enabled` is called with `(done, total)` instead of drawing a bar.
    """
    if callable(enabled):
        report = enabled
        count = [0]

        def forward(n: int, done: bool = False) -> None:
            count[0] += n
            report(count[0], total)

        return forward
    if not enabled:
        return lambda n, done=False: None
    try:
        from rich.progress import Progress
    except ImportError:  # pragma: no cover
        return lambda n, done=False: None
    prog = Progress(transient=False)
    task = prog.add_task(desc, total=total)
    prog.start()

    def advance(n: int, done: bool = False) -> None:
        prog.advance(task, n)
        if done:
            prog.stop()

    return advance
