#!/usr/bin/env bash
# One prepared GPU session (~13 min of device time): every GPU figure the open issues still lack.
#
# On the dev machine first (the device has no network and no ../shared):
#   mkdir -p .gpu && cp ../shared/data/spa-eng/spa.txt .gpu/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.8.2 soundfile==0.14.0 cffi pycparser
# Then through the device tool (carry .whl and .gpu):
#   bash benchmarks/gpu_session.sh            # writes JSON + logs under $OUT
#
# Steps run in priority order, each under its own timeout, and each writes its JSON as soon as it
# ends, so a session cut short still returns what finished.
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=.:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1

step() {  # step NAME SECONDS COMMAND...
  local name=$1 secs=$2
  shift 2
  echo "=== $name (limit ${secs}s) ===" | tee -a "$OUT/steps.log"
  local t0=$SECONDS
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  echo "$name rc=$? wall=$((SECONDS - t0))s" | tee -a "$OUT/steps.log"
}

# 1. Issue 3: Tatoeba Transformer, 8 min of training on the GPU (target: test BLEU >= 40 after 10 GPU min).
if [ -f .gpu/spa.txt ]; then
  step tatoeba_transformer 660 python benchmarks/translation.py --config configs/translation/tatoeba.yaml \
    --minutes 8 --no-throughput --out "$OUT/translation_tatoeba_transformer_gpu.json" \
    -- --config configs/translation/gpu.yaml --data.path .gpu/spa.txt --data.num_workers 4
fi
# 2. Issue 7: our Transformer vs MarianMT at equal size (tokens/s, MFU, beam-5 decoding), eager + compiled.
step marian 240 python benchmarks/translation_vs_marian.py --device cuda --compile \
  --out "$OUT/translation_vs_marian_gpu.json"
# 3. Issue 7: RNN + additive vs the naive per-step RNN.
step rnn_throughput 90 python benchmarks/translation.py --throughput-only --device cuda \
  --out "$OUT/translation_rnn_throughput_gpu.json"
# 4. Issue 4: captioning training images/s on the GPU (default config, 1 min) with the data-wait share.
step captioning 150 python benchmarks/captioning.py --minutes 1 --accelerator gpu \
  --out "$OUT/captioning_default_gpu.json" --trainer.precision=bf16-mixed --data.num_workers=4
ls -la "$OUT"
