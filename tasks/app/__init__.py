"""``attn-app``: a local web app (Gradio) that shows each task's output and its attention.

Install with ``pip install 'attn-suite[app]'``. ``tasks.app.loading`` and ``tasks.app.inference`` work
without Gradio; only ``tasks.app.app`` and the ``attn-app`` command import it.
"""
