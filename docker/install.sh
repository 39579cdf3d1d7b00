#!/usr/bin/env bash
# Install fluidserve for GPU runs (the container's install step; CI runs it too, without docker).
#
#   bash docker/install.sh                 # pip install ".[calib,torch,serve]" + pytest (the Dockerfile)
#   INSTALL_VLLM=1 bash docker/install.sh  # ... and the vllm extra (the harness's real servers)
#   bash docker/install.sh --editable      # pip install -e (CI: into its virtual environment)
#   bash docker/install.sh --verify-only   # install nothing, only check an existing install
#
# Extras: calib (NVML PowerMonitor, the load client), torch (the step profiler), serve (the
# harness's proxy and stand-ins); pytest for calibration/run_gpu.sh's PowerMonitor test step.
# After installing it verifies what calibration/run_gpu.sh and the harness need: the imports, the
# 'fluidserve' commands and the entrypoint script's syntax. Set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EDITABLE=()
VERIFY_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --editable) EDITABLE=(-e) ;;
    --verify-only) VERIFY_ONLY=1 ;;
    *) echo "docker/install.sh: unknown option '$arg' (use --editable, --verify-only)" >&2; exit 2 ;;
  esac
done
EXTRAS="calib,torch,serve"
MODULES="fluidserve pynvml httpx torch fastapi uvicorn pytest"
if [ "${INSTALL_VLLM:-0}" = "1" ]; then
  EXTRAS="$EXTRAS,vllm"
  MODULES="$MODULES vllm"
fi

if [ "$VERIFY_ONLY" != "1" ]; then
  echo "== pip install ${EDITABLE[*]} .[$EXTRAS] pytest" >&2
  "$PY" -m pip install --no-cache-dir --progress-bar off -q "${EDITABLE[@]}" ".[$EXTRAS]" pytest
fi

echo "== verify" >&2
"$PY" - $MODULES <<'PYEOF'
import importlib
import sys

versions = {}
for name in sys.argv[1:]:
    mod = importlib.import_module(name)
    versions[name] = getattr(mod, "__version__", "?")
from fluidserve.calibration.power import PowerMonitor  # noqa: F401  (NVML sampler of run_gpu.sh)
from fluidserve.harness import commands, proxy, runner  # noqa: F401
print(" ".join(f"{k}={v}" for k, v in versions.items()))
PYEOF
"$PY" -m fluidserve --version >/dev/null
"$PY" -m fluidserve harness --help >/dev/null
"$PY" -m fluidserve calibrate --help >/dev/null
bash -n calibration/run_gpu.sh
echo "docker/install.sh: ok" >&2
