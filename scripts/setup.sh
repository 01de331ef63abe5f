#!/usr/bin/env bash
# Create (or reuse) the project virtual environment and install the pinned stack.
#
#   ATTN_VENV   where the venv lives (default: ./.venv). CI points it at a persistent cache
#               folder so the several-GB PyTorch download happens once, not on every run.
#   PYTHON      interpreter used to create the venv (default: python3, needs >= 3.11).
#
# The install is skipped when pyproject.toml and requirements/constraints.txt are unchanged
# since the last successful install into that venv (a hash stamp inside the venv); the
# project itself is always re-linked (editable, no deps) because the checkout may have moved.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ATTN_VENV:-.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.attn-suite-deps"
want="$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -d' ' -f1)"

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: $PY is $("$PY" --version 2>&1); attn-suite needs Python >= 3.11 (set PYTHON=...)" >&2
    exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo ">> creating virtual environment in $VENV"
    "$PY" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo ">> installing pinned dependencies into $VENV (first run downloads PyTorch, several GB)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -c requirements/constraints.txt -e ".[dev,speech,app,pretrained,ctranslate2,onnx]"
    echo "$want" > "$STAMP"
fi
log="$(mktemp)"
if ! "$VENV/bin/python" -m pip install -q --no-deps -e . >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
rm -f "$log"
