"""Shared attention library for the attn-suite tasks.

`core.attention` holds every attention mechanism behind one interface and a registry;
`core.decoding.beam`, `core.text.tokenizers`, `core.viz`, `core.io.checkpoint` hold what all tasks share.
"""

__version__ = "0.1.0"
