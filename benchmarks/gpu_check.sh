#!/usr/bin/env bash
# One-shot GPU check for jaxbp (issue 5, item 4; issue 12, item 5; issue 13, item 4): the equivalence tests and
# `jaxbp bench` on an NVIDIA GPU, results written to the folder named by the first argument.
#
#   benchmarks/gpu_check.sh OUT_DIR            (from anywhere; ≤ 10 minutes)
#
# Installs nothing (GPU machines are often air-gapped): it uses the python on PATH (or $PYTHON)
# with the JAX + CUDA, optax, chex, numpy, scipy, scikit-learn, pytest (and optionally PyTorch,
# hypothesis) already installed there, and runs jaxbp from this source tree with PYTHONPATH=src.
# Whatever is missing is listed in OUT_DIR/MISSING.txt and on stdout, and the parts that need it
# are skipped; the exit code is 0 only when every part ran and passed.
#
# Writes to OUT_DIR:
#   environment.txt     nvidia-smi, python and package versions, jax.devices()
#   tests.log           the equivalence tests (hand-derived vs jax.grad) run on the GPU
#   bench.json/.txt     jaxbp bench, float32, every MLP configuration and method; every peer
#                       (PyTorch CUDA, scikit-learn) in a worker process of its own; hand_bf16
#                       (bf16 products, float32 accumulation) beside PyTorch's bf16 autocast
#   bench_bf16.json/.txt  the GEMM-bound configurations: float32 vs --precision bf16 (hand_bf16)
#                       vs PyTorch autocast, and the whole step under --matmul-precision bfloat16
#   cnn_tests.log       the cnn configuration's correctness tests (every method's SGD steps agree)
#   bench_cnn.json/.txt the cnn configuration (LeNet, 28x28x1, batch 256): hand-derived vs
#                       jax.grad vs PyTorch, float32; cnn_hlo.txt the two steps' compiled ops
#   MISSING.txt         what was missing (absent when nothing was)
#   status.txt          one line per part: ok / FAILED (exit code) / skipped (why)
set -u
if [ $# -lt 1 ]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd) || { echo "cannot create $1" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export JAX_PLATFORMS=cuda   # tests/conftest.py defaults to cpu only when this is unset
: > "$OUT/status.txt"
rm -f "$OUT/MISSING.txt"
status() { echo "$1: $2" | tee -a "$OUT/status.txt"; }
missing() { echo "$1" | tee -a "$OUT/MISSING.txt"; }

# --- 1. what is there ------------------------------------------------------------------------
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  echo "--- nvidia-smi"; nvidia-smi 2>&1 || echo "nvidia-smi not found"
  echo "--- lscpu"; lscpu 2>/dev/null | grep -E "Model name|^CPU\(s\)" || true
  echo "--- python"; command -v "$PY"; "$PY" --version 2>&1
} > "$OUT/environment.txt" 2>&1
command -v "$PY" >/dev/null || { missing "python ($PY not on PATH; set PYTHON=...)"; exit 1; }
command -v nvidia-smi >/dev/null || missing "nvidia-smi (no NVIDIA driver visible)"
for mod in jax jaxlib optax chex numpy scipy sklearn pytest; do
  if ! "$PY" -c "import $mod" 2>/dev/null; then missing "python package $mod (required)"; fi
done
for mod in torch hypothesis xdist; do
  if ! "$PY" -c "import $mod" 2>/dev/null; then missing "python package $mod (optional: see status.txt)"; fi
done
"$PY" - >> "$OUT/environment.txt" 2>&1 <<'PYEOF'
import importlib
for m in ("jax", "jaxlib", "optax", "chex", "numpy", "scipy", "sklearn", "torch", "pytest", "hypothesis"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:
        print(m, "MISSING", type(e).__name__)
try:
    import jax
    print("devices", jax.devices(), "backend", jax.default_backend())
except Exception as e:
    print("jax devices: ERROR", repr(e))
try:
    import torch
    print("torch cuda", torch.cuda.is_available(), torch.version.cuda)
except Exception:
    pass
PYEOF
if ! "$PY" -c "import jax, sys; sys.exit(0 if jax.default_backend() == 'gpu' else 1)" 2>/dev/null; then
  missing "a GPU visible to JAX (jax.default_backend() is not 'gpu': install jax[cuda12] or check the driver)"
  status "gpu" "MISSING — nothing GPU-specific can run; see environment.txt"
  exit 1
fi
status "gpu" "ok ($("$PY" -c "import jax; print(jax.devices()[0].device_kind)"))"

# --- 2. equivalence tests on the GPU (≈ 2-3 min) ----------------------------------------------
TESTS=""
for t in backprop forward losses activations vjp per_sample autodiff precision; do
  [ -f "tests/test_$t.py" ] && TESTS="$TESTS tests/test_$t.py"
done
if "$PY" -c "import hypothesis" 2>/dev/null; then :; else
  TESTS=$(echo $TESTS | tr ' ' '\n' | while read -r f; do grep -q hypothesis "$f" || echo "$f"; done | tr '\n' ' ')
  status "tests" "note: hypothesis missing, property-based test files left out"
fi
timeout 240 "$PY" -m pytest $TESTS -q -p no:cacheprovider > "$OUT/tests.log" 2>&1
rc=$?
[ $rc -eq 0 ] && status "tests" "ok ($(tail -1 "$OUT/tests.log"))" || status "tests" "FAILED (exit $rc; see tests.log)"
fail=$rc

# --- 3. jaxbp bench, float32 (≈ 3 min) ---------------------------------------------------------
timeout 240 "$PY" benchmarks/run_bench.py --configs tiny,course,mnist,wide,deep --budget 2 \
  --json "$OUT/bench.json" > "$OUT/bench.txt" 2> "$OUT/bench.err"
rc=$?
[ $rc -eq 0 ] && status "bench" "ok" || status "bench" "FAILED (exit $rc; see bench.err)"
[ $rc -ne 0 ] && fail=$rc

# --- 4. bf16 matmuls on the GEMM-bound configurations (≈ 1 min) ---------------------------------
timeout 90 "$PY" benchmarks/run_bench.py --configs mnist,wide,deep \
  --methods hand,hand_bf16,autodiff,torch,torch_bf16 --matmul-precision bfloat16 --no-accuracy \
  --no-epoch --no-verify --budget 1 --json "$OUT/bench_bf16.json" \
  > "$OUT/bench_bf16.txt" 2> "$OUT/bench_bf16.err"
rc=$?
[ $rc -eq 0 ] && status "bench_bf16" "ok" || status "bench_bf16" "FAILED (exit $rc; see bench_bf16.err)"
[ $rc -ne 0 ] && fail=$rc

# --- 5. the cnn configuration: its tests, jaxbp bench, the compiled ops (≈ 1.5 min) -------------
timeout 120 "$PY" -m pytest tests/test_bench.py -q -p no:cacheprovider -k "cnn or lenet" \
  > "$OUT/cnn_tests.log" 2>&1
rc=$?
[ $rc -eq 0 ] && status "cnn_tests" "ok ($(tail -1 "$OUT/cnn_tests.log"))" || status "cnn_tests" "FAILED (exit $rc; see cnn_tests.log)"
[ $rc -ne 0 ] && fail=$rc
timeout 120 "$PY" benchmarks/run_bench.py --configs cnn --methods hand,custom_vjp,autodiff,torch \
  --no-accuracy --no-verify --budget 2 --json "$OUT/bench_cnn.json" \
  > "$OUT/bench_cnn.txt" 2> "$OUT/bench_cnn.err"
rc=$?
[ $rc -eq 0 ] && status "bench_cnn" "ok" || status "bench_cnn" "FAILED (exit $rc; see bench_cnn.err)"
[ $rc -ne 0 ] && fail=$rc
timeout 60 "$PY" benchmarks/cnn_step.py hlo > "$OUT/cnn_hlo.txt" 2>&1 \
  && status "cnn_hlo" "ok" || status "cnn_hlo" "FAILED (see cnn_hlo.txt)"

echo
cat "$OUT/bench.txt" 2>/dev/null
echo
cat "$OUT/bench_cnn.txt" 2>/dev/null
[ -f "$OUT/MISSING.txt" ] && { echo; echo "MISSING:"; cat "$OUT/MISSING.txt"; }
echo "results in $OUT"
exit $fail
