#!/usr/bin/env bash
# One prepared GPU call (fits the device tool's 10-minute limit): the GPU figures issue 7 still lacks.
#
# On the dev machine first (the device has no network and no ../shared):
#   mkdir -p .gpu && cp ../shared/data/spa-eng/spa.txt .gpu/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.8.2 soundfile==0.14.0 cffi pycparser
# Then through the device tool (carry .whl and .gpu), with a 600 s timeout:
#   bash benchmarks/gpu_session.sh                 # issue 7 steps, ~9 min
#   bash benchmarks/gpu_session.sh tatoeba         # the Tatoeba 8-min quality run alone (issue 3)
#   bash benchmarks/gpu_session.sh engines         # issue 25's CUDA rows: ours in PyTorch and on CTranslate2
#                                                  # (fp32/fp16/int8+fp16) vs MarianMT on CTranslate2 and HF generate
#     (also download into .whl: ctranslate2==4.8.5 onnxruntime==1.32.0 onnx==1.23.2 onnxscript==0.7.2 onnx-ir
#      ml_dtypes flatbuffers protobuf; carry .peer/i25/model as the trained CPU-recipe model if it exists)
#
# Steps run in priority order, each under its own timeout, and each writes its JSON as soon as it
# ends, so a call cut short still returns what finished.
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=.:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1

step() {  # step NAME SECONDS COMMAND...
  local name=$1 secs=$2
  shift 2
  echo "=== $name (limit ${secs}s) ===" | tee -a "$OUT/steps.log"
  local t0=$SECONDS
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  echo "$name rc=$? wall=$((SECONDS - t0))s" | tee -a "$OUT/steps.log"
}

if [ "${1:-issue7}" = engines ]; then
  ckpt=()
  [ -d .peer/i25/model ] && ckpt=(--ckpt .peer/i25/model)
  step inference_engines_cuda 560 python benchmarks/inference_engines.py --device cuda --threads 1 \
    --sizes cpu base --sentences 512 --rounds 3 --startup-runs 3 "${ckpt[@]}" --work /tmp/engines \
    --out "$OUT/inference_engines_cuda.json"
  ls -la "$OUT"
  exit 0
fi

if [ "${1:-issue7}" = tatoeba ]; then
  # Tatoeba Transformer, 8 min of training on the GPU (issue 3's target: test BLEU >= 40 in 10 GPU min).
  step tatoeba_transformer 580 python benchmarks/translation.py --config configs/translation/tatoeba.yaml \
    --minutes 8 --no-throughput --out "$OUT/translation_tatoeba_transformer_gpu.json" \
    -- --config configs/translation/gpu.yaml --data.path .gpu/spa.txt --data.num_workers 4
  ls -la "$OUT"
  exit 0
fi

# 1. RNN + additive vs the naive per-step RNN: eager, and ours under CUDA graphs (reduce-overhead).
step rnn_throughput 120 python benchmarks/translation.py --throughput-only --device cuda \
  --compile reduce-overhead --out "$OUT/translation_rnn_throughput_gpu.json"
# 2. Our Transformer vs MarianMT at equal size (tokens/s, MFU, beam-5 decoding), eager + compiled.
step marian 220 python benchmarks/translation_vs_marian.py --device cuda --compile \
  --out "$OUT/translation_vs_marian_gpu.json"
# 3. Peak memory of additive/location attention in a speech training step at 1,000 encoder frames.
step speech_memory 100 python benchmarks/speech_memory.py --device cuda --batch 32 \
  --out "$OUT/speech_memory_gpu.json"
# 4. Captioning training images/s on the GPU (default config, 45 s) with the data-wait share.
step captioning 90 python benchmarks/captioning.py --minutes 0.75 --accelerator gpu \
  --out "$OUT/captioning_default_gpu.json" --trainer.precision=bf16-mixed --data.num_workers=4
ls -la "$OUT"
