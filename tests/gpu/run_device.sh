#!/usr/bin/env bash
# tests/gpu on a CUDA machine, in one prepared command (issue 22, item 7). From the repository root:
#
#     bash tests/gpu/run_device.sh            # logs under $OUT (default /tmp/ringctl-gpu-out)
#
# Written for this workplace's H200 device (`run` tool; one command may run 10 minutes, the session has 15): python3
# there holds torch + transformers, but not vllm, deepspeed or mlflow, and no package registry is reachable from it.
# - vllm: used if importable; else `pip install $RINGCTL_VLLM_SPEC` (vllm==0.32.0) into a venv if the index answers
#   (its pinned torch lands in that venv, the other tests keep the image's torch); else the tests marked vllm skip
#   and setup.log says so (RINGCTL_GPU_NO_INSTALL=1: never install). vLLM's wheel (~400 MB) is over the device's 64 MiB carry, so it cannot travel as a wheel.
# - ringctl's own pure-Python dependencies missing there can travel as wheels: prepare once here
#   (`echo /.whl/ >> .git/info/exclude`, then the README's `pip download --no-deps --only-binary=:all:
#   --python-version 3.12 ... -d .whl NAME==VERSION` for each name that setup.log lists as missing), name `.whl` in
#   `carry`; this script installs them into /tmp/site first.
# - every test file runs under its own timeout, most informative first, within RINGCTL_GPU_BUDGET_S (default 540 s,
#   leaving room under the 600 s command limit); a file that gets no time is reported as not run.
# Files under $OUT: setup.log (versions, GPUs, missing modules, the vllm decision), pytest.log (every file's
# output, -rA), summary.txt (one line per test file: exit code, or "not run").
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ringctl-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET=${RINGCTL_GPU_BUDGET_S:-540}
VLLM_SPEC=${RINGCTL_VLLM_SPEC:-vllm==0.32.0}  # the version tests/gpu was written against
START=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SETUP="$OUT/setup.log" LOG="$OUT/pytest.log" SUMMARY="$OUT/summary.txt"
: >"$LOG"; : >"$SUMMARY"

{
  echo "== $(date -u +%FT%TZ) $(uname -m)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi: not found"
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    echo "== carried wheels: $(ls .whl | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH="$PYTHONPATH:/tmp/site"
  fi
} >"$SETUP" 2>&1
export PYTHONPATH  # the carried wheels' folder, if any, after the repository and the image's packages

modules() {  # which of the modules the tests import are missing for interpreter $1
  "$1" - <<'EOF' 2>&1
import importlib.util, sys
import torch, transformers
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "gpus", torch.cuda.device_count(), "transformers", transformers.__version__)
names = ["vllm", "flashinfer", "deepspeed", "mlflow", "pydantic", "omegaconf", "hydra", "typer", "yaml", "pytest",
         "pytest_timeout"]
print("missing:", " ".join(n for n in names if importlib.util.find_spec(n) is None) or "none")
EOF
}

VLLM_PY=""
{
  modules "$PY"
  if "$PY" -c "import vllm" 2>/dev/null; then
    VLLM_PY="$PY"
    echo "== vllm $("$PY" -c 'import vllm; print(vllm.__version__)') already installed"
  elif [ -n "${RINGCTL_GPU_NO_INSTALL:-}" ]; then
    echo "== vllm: not installed, RINGCTL_GPU_NO_INSTALL set: the tests marked vllm SKIP"
  elif timeout 20 "$PY" -m pip index versions vllm >/dev/null 2>&1; then
    echo "== the package index answers: pip install vllm into /tmp/vllm-venv (the image's packages visible)"
    # python3 is itself a venv, whose packages --system-site-packages would not show: a .pth file does
    "$PY" -m venv /tmp/vllm-venv \
      && "$PY" -c 'import site; print("\n".join(site.getsitepackages()))' \
         >"$(/tmp/vllm-venv/bin/python -c 'import site; print(site.getsitepackages()[0])')/_image.pth" \
      && timeout 300 /tmp/vllm-venv/bin/python -m pip install -q "$VLLM_SPEC" \
      && /tmp/vllm-venv/bin/python -c "import vllm; print('vllm', vllm.__version__)" \
      && VLLM_PY=/tmp/vllm-venv/bin/python
    [ -n "$VLLM_PY" ] && modules "$VLLM_PY" || echo "== vllm: install failed: the tests marked vllm SKIP"
  else
    echo "== vllm: not installed and no package index reachable from this machine: the tests marked vllm SKIP" \
         "(they need a machine that can pip install vllm, or an image with it)"
  fi
} >>"$SETUP" 2>&1
cat "$SETUP"

run_file() {  # $1 interpreter, $2 test file, $3 seconds wanted
  local left=$(( BUDGET - ($(date +%s) - START) ))
  local secs=$(( $3 < left ? $3 : left ))
  if [ "$secs" -lt 30 ]; then
    echo "$2: not run (budget spent)" | tee -a "$SUMMARY"
    return
  fi
  echo "== $2 ($1, up to ${secs}s)" | tee -a "$LOG"
  timeout -k 10 "$secs" "$1" -m pytest "$2" -q -rA -p no:cacheprovider 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "$2: exit $rc$([ "$rc" = 124 ] && echo ' (timed out)')" | tee -a "$SUMMARY"
}

# vLLM's files with the interpreter that has vllm (without one they skip in seconds, with the reason)
VP=${VLLM_PY:-$PY}
run_file "$VP" tests/gpu/test_vllm_rollout.py 300
run_file "$VP" tests/gpu/test_vllm_eval.py 150
run_file "$VP" tests/gpu/test_vllm_nccl.py 240  # skips on one GPU (see the file)
run_file "$PY" tests/gpu/test_zero3_gather.py 120
run_file "$PY" tests/gpu/test_long_context_memory.py 180  # issue 23: 32K tokens, bf16, ~1.1B parameters
run_file "$PY" tests/gpu/test_tiny_pipeline_cuda.py 400
echo "== done in $(( $(date +%s) - START ))s" | tee -a "$SUMMARY"
