"""Inference engines beside PyTorch: exports a task's network for CTranslate2 or ONNX Runtime, and runs them.

* :mod:`core.engines.folder` -- the export folder (``config.json`` with an ``engine``), written and read with the
  checks of a model folder; :func:`~core.engines.folder.require` imports an engine's optional package or says how
  to install it.
* :mod:`core.engines.onnx` -- encoder and one-step decoder graphs driven by ``core.decoding`` beam search.

A task's export code (e.g. ``tasks.translation.engines``) says what its network's graphs or converter specs are.
"""
