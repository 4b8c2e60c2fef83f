#!/usr/bin/env bash
# Everything only a GPU can show, in one go (under 8 minutes on one GPU), into one summary file:
#   1. the `gpu`-marked tests (tests/test_gpu.py): a bf16 + channels_last trial, no host sync in the step loop
#      (CUDA sync debug mode, eager and compiled), trainer.compile, a real CUDA out-of-memory and its retry at
#      half batch, the NaN watch on CUDA, workers=auto measuring a trial and packing, workers_per_gpu=2 on one
#      GPU, and a DDP trial when there are >= 2 GPUs;
#   2. python bench/gpu.py         (dse's trial loop vs a hand-tuned loop: img/s, TFLOP/s, `ratio:`);
#   3. python bench/gpu.py --pack  (trials/hour at K = 1, 2, 4, 8 trials on one GPU).
# Summary: bench/data/gpu_check.txt, or $DSE_GPU_CHECK_OUT (GPU, driver, versions, each step's exit code, time
# and output).
#
#   bash bench/gpu_check.sh                  # on the GPU machine, from anywhere
#   bash bench/gpu_check.sh --fetch-wheels   # on a machine WITH internet: save the wheels a bare GPU image lacks
#
# It installs nothing from the internet. Python: $PYTHON, else .venv/bin/python when it has torch, else python3.
# Packages dse needs that the interpreter lacks can travel as wheels in .whl/ (made by --fetch-wheels for
# CPython 3.12 on x86-64): they are installed with --no-index into a temporary folder, nothing else is touched.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SITE=/tmp/dse-gpu-check-site
OUTFILE="${DSE_GPU_CHECK_OUT:-$ROOT/bench/data/gpu_check.txt}"  # env DSE_GPU_CHECK_OUT: elsewhere
# versions as in the project's own environment; antlr4 4.9.3 has no wheel on PyPI, so one is built here
WHEELS="optuna==5.1.0 optuna-integration==5.0.0 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 colorlog==6.12.0
hydra-core==1.3.8 omegaconf==2.3.1 plotly==7.1.0"

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  PY="${PYTHON:-python3}"
  mkdir -p .whl
  for w in $WHEELS; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "$w" || exit 1
  done
  "$PY" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3 || exit 1
  grep -qsx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info && echo '/.whl/' >> .git/info/exclude; }
  du -sh .whl && ls .whl
  exit 0
fi

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python
else PY=python3; fi
PATHS="$ROOT"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    && PATHS="$ROOT:$SITE"
fi
export PYTHONPATH="$PATHS${PYTHONPATH:+:$PYTHONPATH}"
export DSE_REQUIRE_GPU=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
export TORCHINDUCTOR_CACHE_DIR=/tmp/dse-gpu-check-inductor  # shared by the steps: later compiles are warm
mkdir -p "$(dirname "$OUTFILE")"
START=$(date +%s)
{
  echo "# bench/gpu_check.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "## machine"
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  echo "cpus: $(nproc)"
  "$PY" - <<'EOF' 2>&1
import importlib, platform, sys
print(f"python: {platform.python_version()} ({sys.executable})")
for name in ("torch", "lightning", "timm", "torchmetrics", "triton", "optuna", "optuna_integration", "hydra",
             "omegaconf", "sqlalchemy", "plotly", "yaml", "pytest"):
    try:
        mod = importlib.import_module(name)
        print(f"{name}: {getattr(mod, '__version__', '?')}")
    except Exception as exc:  # noqa: BLE001 - report, keep going
        print(f"{name}: MISSING ({type(exc).__name__}: {exc})")
import torch
print(f"cuda: {torch.version.cuda}, available: {torch.cuda.is_available()}, devices: {torch.cuda.device_count()}"
      + (f", bf16: {torch.cuda.is_bf16_supported()}" if torch.cuda.is_available() else ""))
EOF
} > "$OUTFILE"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log exit code, time and output
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s) log; log=$(mktemp)
  echo "== $name (limit ${limit} s): $*"
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]} took=$(( $(date +%s) - t0 ))
  [[ $rc == 124 || $rc == 137 ]] && echo "== $name: TIMED OUT after ${limit} s"
  { echo; echo "## $name: exit $rc in ${took} s"; echo "\$ $*"; cat "$log"; } >> "$OUTFILE"
  RESULTS+=("$name: exit $rc in ${took} s; last line: $(tail -n 1 "$log")")
  rm -f "$log"
}
RESULTS=()
step "gpu tests" 160 "$PY" -m pytest -p no:cacheprovider -m gpu -rA --timeout 150 tests/test_gpu.py
step "bench/gpu.py" 200 "$PY" bench/gpu.py
step "bench/gpu.py --pack" 100 "$PY" bench/gpu.py --pack
{
  echo; echo "## summary ($(( $(date +%s) - START )) s in all)"
  printf '%s\n' "${RESULTS[@]}"
} >> "$OUTFILE"
echo "summary: $OUTFILE"
tail -n 12 "$OUTFILE"
