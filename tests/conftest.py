"""Suite-wide test settings."""

from __future__ import annotations

import os

import matplotlib
import torch

# Headless plotting everywhere (CI has no display).
matplotlib.use("Agg")

# Under pytest-xdist every worker is its own process: one intra-op thread each keeps
# `-n 2` on a 2-core machine from oversubscribing the cores (4 threads fighting for 2).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
