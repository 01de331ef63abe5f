"""The Gradio app: one tab per loaded task, each also an API endpoint (``/translate``, ``/caption``, ``/transcribe``).

Only this module and :mod:`tasks.app.cli` import Gradio (the ``attn-suite[app]`` extra). Nothing is
fetched from outside: analytics are off, the theme uses system fonts, server-side rendering (a Node
process) is off, and the page is served from the installed package.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Before Gradio is imported: it reads these at import time.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr

from core.errors import UserError
from tasks.app.inference import (
    AppInputError,
    Limits,
    TabResult,
    example_images,
    run_captioning,
    run_speech,
    run_translation,
)

__all__ = ["API_NAMES", "AppBlocks", "build_app", "describe_input", "launch_app", "theme"]

log = logging.getLogger(__name__)

#: endpoint of each task's tab (``client.predict(..., api_name="/translate")``)
API_NAMES: dict[str, str] = {"translation": "translate", "captioning": "caption", "speech": "transcribe"}

SYSTEM_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]

NOTES = {
    "alignment": "**How to read it:** row = output token, column = source token; a bright cell is where the "
    "model looked while writing that output token. A clean diagonal means word-for-word order; "
    "off-diagonal blocks are reorderings (adjective after the noun in Spanish).",
    "heads": "**How to read it:** the same heatmap for each decoder layer (Transformer) and each head of "
    "multi-head attention, with their mean first. Heads specialise: some align, some look at "
    "punctuation or the sentence end. Empty for single-head RNN attention, where the map above is all.",
    "overlay": "**How to read it:** one panel per generated word; the light area is the part of the image the "
    "decoder attended to when it chose that word (each panel scaled to its own maximum).",
    "words": "**How to read it:** the same overlay one word at a time; click a word to enlarge it and "
    "step through the caption with the arrow keys.",
    "speech": "**How to read it:** top, the log-mel spectrogram (time to the right, low frequencies at the "
    "bottom); below, one row per output character over the same time axis. The bright path moves "
    "left to right as the model reads the audio; a jump or smear shows where it lost its place.",
}


def theme() -> gr.themes.Base:
    """A theme that uses the system's fonts (the default would load web fonts)."""
    return gr.themes.Base(font=SYSTEM_FONTS, font_mono=MONO_FONTS)


def describe_input(value: Any) -> str:
    """The request's input as its sender knows it, for messages: the text's first line or the file's name."""
    if isinstance(value, dict):  # a Gradio file payload (the tabs read their uploads themselves)
        name = value.get("orig_name") or Path(str(value.get("path") or "")).name
        return f"the file {name}" if name else "the upload"
    if isinstance(value, str) and value.strip():
        lines = [ln.strip() for ln in value.splitlines() if ln.strip()]
        first = lines[0] if len(lines[0]) <= 40 else lines[0][:39] + "…"
        more = f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else ""
        return f'the text "{first}"{more}'
    return "the request" if value is None else f"the input {type(value).__name__}"


def _handler(
    run: Callable[..., TabResult], model: Any, limits: Limits, outputs: Callable[[TabResult], tuple]
) -> Callable[..., tuple]:
    """Wrap a ``run_*`` function: every failure becomes a message in the page, the server goes on.

    ``outputs`` maps the result onto the tab's output components. Whatever a request raises (a
    ``pyo3_runtime.PanicException`` from a Rust library is a ``BaseException``, not an ``Exception``) is
    answered with a ``gr.Error`` naming the input; uncaught, it would end Gradio's queue task and leave the
    client waiting forever. Only ``KeyboardInterrupt`` and ``SystemExit`` pass.
    """

    def handle(value: Any, beam: Any, nbest: Any) -> tuple:
        try:
            result = run(model, value, beam, nbest, limits)
            for note in result.notes:  # shown beside the output, which stays as it is
                gr.Warning(note)
            return outputs(result)
        except gr.Error:
            raise
        except AppInputError as err:  # its message already names the input and what was expected
            raise gr.Error(str(err), title="Cannot use this input", print_exception=False) from None
        except UserError as err:  # the library's own user errors (ConfigError, DataError, tokenizer limits...)
            raise gr.Error(
                f"{describe_input(value)}: {err}", title="Cannot use this input", print_exception=False
            ) from None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # a bug or a library panic, not the user's fault: say so, log the traceback
            log.error("request on %s failed", describe_input(value), exc_info=err)
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise gr.Error(
                f"internal error on {describe_input(value)} ({type(err).__name__}: {first}); the app keeps running",
                title="Internal error",
                print_exception=False,
            ) from None

    return handle


def _controls(limits: Limits) -> tuple[gr.Slider, gr.Slider]:
    beam = gr.Slider(
        1, limits.max_beam, value=min(5, limits.max_beam), step=1, label="beam size", info="1 = greedy search"
    )
    nbest = gr.Slider(1, limits.max_beam, value=3, step=1, label="n-best", info="hypotheses listed (at most the beam)")
    return beam, nbest


def _translation_tab(model: Any, limits: Limits) -> None:
    with gr.Row():
        with gr.Column(scale=2):
            text = gr.Textbox(
                label="English sentences (one per line)",
                lines=4,
                elem_id="translation-input",
                placeholder="the red car\nI love you",
                max_length=limits.max_sentences * (limits.max_chars + 1),
            )
        with gr.Column(scale=1):
            beam, nbest = _controls(limits)
            go = gr.Button("Translate", variant="primary", elem_id="translation-submit")
    out = gr.Textbox(label="translation (one per line)", elem_id="translation-output", interactive=False)
    table = gr.Dataframe(
        headers=["line", "rank", "translation", "score"],
        label="n-best (score = length-normalised log-probability)",
        interactive=False,
        wrap=True,
    )
    figs = gr.Gallery(
        label="alignment",
        columns=2,
        height=460,
        object_fit="contain",
        preview=False,
        format="png",
        elem_id="translation-alignment",
    )
    gr.Markdown(NOTES["alignment"])
    heads = gr.Gallery(
        label="per layer and head",
        columns=3,
        height=420,
        object_fit="contain",
        preview=False,
        format="png",
        elem_id="translation-heads",
    )
    gr.Markdown(NOTES["heads"])
    gr.Examples([["the red car"], ["I love you\nthe dog eats bread"]], inputs=[text])
    fn = _handler(run_translation, model, limits, lambda r: (r.text, r.nbest, r.figures, r.details))
    # preprocess=False (every tab): the handler checks the values as sent, so an API client's beam=10**6 or
    # beam="x" gets the app's message naming the field and its bound, like a bad text or file does.
    go.click(fn, [text, beam, nbest], [out, table, figs, heads], api_name=API_NAMES["translation"], preprocess=False)
    text.submit(fn, [text, beam, nbest], [out, table, figs, heads], api_visibility="private", preprocess=False)


def _captioning_tab(model: Any, limits: Limits, examples_dir: Path) -> None:
    with gr.Row():
        with gr.Column(scale=2):
            image = gr.Image(
                type="filepath",
                label="image (upload, paste or drop)",
                sources=["upload", "clipboard"],
                height=260,
                elem_id="captioning-input",
            )
        with gr.Column(scale=1):
            beam, nbest = _controls(limits)
            go = gr.Button("Caption", variant="primary", elem_id="captioning-submit")
    size = int(getattr(model, "image_size", 128) or 128)
    gr.Examples(
        [[str(p)] for p in example_images(examples_dir, image_size=max(size, 96))],
        inputs=[image],
        label="bundled examples (generated scenes)",
    )
    out = gr.Textbox(label="caption", elem_id="captioning-output", interactive=False)
    table = gr.Dataframe(headers=["rank", "caption", "score"], label="n-best", interactive=False, wrap=True)
    figs = gr.Image(
        label="attention per word", type="pil", format="png", interactive=False, elem_id="captioning-overlay"
    )
    gr.Markdown(NOTES["overlay"])
    words = gr.Gallery(
        label="word by word",
        columns=6,
        height=260,
        object_fit="contain",
        preview=False,
        format="png",
        elem_id="captioning-words",
    )
    gr.Markdown(NOTES["words"])
    # preprocess=False: the handler gets the upload itself and reports a file PIL cannot open by name,
    # with what was expected, instead of Gradio's generic processing error.
    fn = _handler(
        run_captioning, model, limits, lambda r: (r.text, r.nbest, r.figures[0][0] if r.figures else None, r.details)
    )
    go.click(fn, [image, beam, nbest], [out, table, figs, words], api_name=API_NAMES["captioning"], preprocess=False)


def _speech_tab(model: Any, limits: Limits) -> None:
    with gr.Row():
        with gr.Column(scale=2):
            # format=None: keep the file as sent (the server has no ffmpeg to convert it); soundfile reads it.
            audio = gr.Audio(
                sources=["upload", "microphone"],
                type="filepath",
                format=None,
                elem_id="speech-input",
                label=f"audio (upload or record, up to {limits.max_audio_seconds:g} s)",
            )
        with gr.Column(scale=1):
            beam, nbest = _controls(limits)
            go = gr.Button("Transcribe", variant="primary", elem_id="speech-submit")
    out = gr.Textbox(label="transcript", elem_id="speech-output", interactive=False)
    table = gr.Dataframe(
        headers=["rank", "transcript", "score"], label="n-best (attention + CTC rescored)", interactive=False, wrap=True
    )
    # one figure per chunk the audio was cut into (usually one)
    figs = gr.Gallery(
        label="spectrogram and alignment",
        columns=1,
        height="auto",
        object_fit="contain",
        preview=False,
        format="png",
        elem_id="speech-alignment",
    )
    gr.Markdown(NOTES["speech"])
    go.click(
        _handler(run_speech, model, limits, lambda r: (r.text, r.nbest, r.figures)),
        [audio, beam, nbest],
        [out, table, figs],
        api_name=API_NAMES["speech"],
        preprocess=False,  # the upload as a payload: messages name the file as uploaded (see the captioning tab)
    )


class AppBlocks(gr.Blocks):
    """The app's page; ``close()`` also removes the temporary folder of its bundled examples.

    The folder (``attn-app-examples-*`` in the temporary directory) lives as long as the app: it is removed by
    ``close()``, when the app is garbage-collected, or when the process exits (``TemporaryDirectory``'s finaliser).
    """

    def __init__(self, *args: Any, temp_dir: tempfile.TemporaryDirectory[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attn_temp_dir = temp_dir

    def close(self, verbose: bool = True) -> None:
        try:
            super().close(verbose)
        finally:
            if self.attn_temp_dir is not None:
                self.attn_temp_dir.cleanup()


def build_app(models: dict[str, Any], limits: Limits | None = None, examples_dir: Path | None = None) -> AppBlocks:
    """The app's page: a tab for each task in ``models``.

    Args:
        models: ``{"translation" | "captioning" | "speech": loaded LightningModule}`` (any subset, not empty).
        limits: input limits (default: `Limits()`).
        examples_dir: where the bundled captioning examples are written (default: a temporary folder that
            ``close()`` removes, as does the end of the process).

    Raises:
        ValueError: ``models`` is empty or names an unknown task.
    """
    unknown = sorted(set(models) - set(API_NAMES))
    if not models or unknown:
        raise ValueError(f"need at least one of {', '.join(API_NAMES)}; got {sorted(models)}")
    limits = limits or Limits()
    temp_dir = None
    if examples_dir is None and "captioning" in models:
        temp_dir = tempfile.TemporaryDirectory(prefix="attn-app-examples-", ignore_cleanup_errors=True)
        examples_dir = Path(temp_dir.name)
    with AppBlocks(title="attn-suite: attention you can see", analytics_enabled=False, temp_dir=temp_dir) as demo:
        gr.Markdown(
            "# attn-suite\nEach task's output and the attention behind it. Every tab is also an API "
            "endpoint (see *Use via API* at the bottom of the page)."
        )
        with gr.Tabs():
            if "translation" in models:
                with gr.Tab("Translation", id="translation"):
                    _translation_tab(models["translation"], limits)
            if "captioning" in models:
                with gr.Tab("Captioning", id="captioning"):
                    assert examples_dir is not None
                    _captioning_tab(models["captioning"], limits, examples_dir)
            if "speech" in models:
                with gr.Tab("Speech", id="speech"):
                    _speech_tab(models["speech"], limits)
    demo.queue(default_concurrency_limit=1)  # one request at a time per tab: the models share the CPU
    return demo


def launch_app(
    demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, limits: Limits | None = None, block: bool = True
) -> str:
    """Serve ``demo``; returns its local URL (with ``block=False`` the server runs in a background thread).

    Uploads larger than ``limits.max_upload_mb`` are refused by the server before they reach a handler.
    """
    limits = limits or Limits()
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        max_file_size=f"{limits.max_upload_mb:g}mb",
        theme=theme(),
        ssr_mode=False,
        share=False,
        show_error=True,
        quiet=not block,
        footer_links=["api"],
        pwa=False,
        mcp_server=False,
        inbrowser=False,
    )
    return url
