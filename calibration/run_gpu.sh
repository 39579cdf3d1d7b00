#!/usr/bin/env bash
# A GPU calibration run: environment, PowerMonitor overhead, backend sanity check, and the
# Llama-3.1-8B step profile with its NVML trace. Reads clocks and power; never sets them.
#
#   OUT=calibration/data/new PREFIX=h200 bash calibration/run_gpu.sh
#
# (calibration/run_h100.sh is this script with PREFIX=h100, the run that made calibration/data/h100_*.)
# Writes into $OUT: ${PREFIX}_env.txt, ${PREFIX}_power_overhead.json, ${PREFIX}_check.json,
# ${PREFIX}_llama31_8b_profile.csv, ${PREFIX}_nvml_trace.csv, ${PREFIX}_profile_summary.json, ${PREFIX}_run.log.
# Grid knobs (env): BATCH_SIZES, CONTEXTS, PREFILL, MIXED, MIN_TIME_S, LAYERS, DEVICE.
set -u
OUT=${OUT:-calibration/data/run}
PREFIX=${PREFIX:-gpu}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BATCH_SIZES=${BATCH_SIZES:-1,2,4,8,16,32,64,128}
CONTEXTS=${CONTEXTS:-128,512,1024,2048,4096}
PREFILL=${PREFILL:-64,128,256,512,1024,2048,4096}
MIXED=${MIXED:-256:8:1024,512:16:1024,512:32:2048,1024:8:512,2048:4:4096,128:64:1024}
MIN_TIME_S=${MIN_TIME_S:-1.5}
SPEC=${SPEC:-calibration/llama31_8b_spec.json}
LAYERS_ARG=${LAYERS:+--layers $LAYERS}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd)
mkdir -p "$OUT"
LOG="$OUT/${PREFIX}_run.log"
: > "$LOG"

{
  echo "# date: $(date -u +%FT%TZ)"; echo "# host: $(uname -a)"
  echo "## nvidia-smi"; nvidia-smi 2>&1
  echo "## nvidia-smi -q (product, clocks, power)"
  nvidia-smi -q -d CLOCK,POWER,TEMPERATURE,PERFORMANCE,MEMORY 2>&1 | head -150
  nvidia-smi -q 2>&1 | grep -E "Product Name|Product Architecture|Driver Version|CUDA Version|VBIOS|Persistence Mode|MIG Mode" -A1 | head -40
  echo "## python"
  $PY -c "import sys, torch, numpy, pandas; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version()); print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'); p = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None; print('sms', p.multi_processor_count if p else None, 'mem_gib', round(p.total_memory / 2**30, 1) if p else None); print('numpy', numpy.__version__, 'pandas', pandas.__version__)" 2>&1
  $PY -c "import pynvml; print('nvidia-ml-py', getattr(pynvml, '__version__', '?'))" 2>&1
} > "$OUT/${PREFIX}_env.txt"

echo "== power overhead (idle, 15 s per field set at 100 ms)" | tee -a "$LOG"
$PY bench/power_overhead.py --seconds 15 --period-s 0.1 --json \
  --field-sets "default;all@1" > "$OUT/${PREFIX}_power_overhead.json" 2>> "$LOG"
echo "rc=$?" >> "$LOG"

echo "== backend sanity check" | tee -a "$LOG"
$PY calibration/check_torch_backend.py --spec "$SPEC" --device "$DEVICE" > "$OUT/${PREFIX}_check.json" 2>> "$LOG"
echo "rc=$?" >> "$LOG"

echo "== PowerMonitor tests (real NVML path included)" | tee -a "$LOG"
$PY -m pytest -q -p no:cacheprovider tests/calibration/test_power.py >> "$LOG" 2>&1
echo "rc=$?" >> "$LOG"

echo "== step profile" | tee -a "$LOG"
$PY -m fluidserve.calibration.profiler --backend torch --model Llama-3.1-8B --model-spec "$SPEC" $LAYERS_ARG \
  --device "$DEVICE" --dtype bfloat16 --batch-sizes "$BATCH_SIZES" --contexts "$CONTEXTS" \
  --prefill-tokens "$PREFILL" --mixed "$MIXED" --min-time-s "$MIN_TIME_S" --power-period-s 0.1 \
  --output-dir "$OUT" --out ${PREFIX}_llama31_8b_profile.csv --trace-out ${PREFIX}_nvml_trace.csv --json \
  > "$OUT/${PREFIX}_profile_summary.json" 2>> "$LOG"
echo "rc=$?" >> "$LOG"
cat "$OUT/${PREFIX}_check.json" "$OUT/${PREFIX}_power_overhead.json" >> "$LOG"
$PY - "$OUT/${PREFIX}_llama31_8b_profile.csv" <<'PYEOF' 2>&1 | tee -a "$LOG"
import sys, pandas as pd
df = pd.read_csv(sys.argv[1])
with pd.option_context("display.width", 200, "display.max_rows", 200):
    print(df[["phase", "batch_size", "prefill_tokens", "context_tokens", "time_ms", "energy_j", "avg_power_w", "sm_clock_mhz", "reps"]].to_string(index=False))
PYEOF
