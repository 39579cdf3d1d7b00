#!/usr/bin/env bash
# Tensor-parallel step profiles on one multi-GPU host: Llama-3.1-8B at TP = 1, 2, 4 (up to the
# GPUs present) and Llama-3.1-70B at TP = 2, 4, plus a bare all-reduce sweep at each TP degree.
# Reads clocks and power; never sets them. NVLink multicast stays off.
#
#   OUT=calibration/data/h200_tp PREFIX=h200 bash calibration/run_tp.sh
#
# Writes into $OUT: ${PREFIX}_tp_env.txt, ${PREFIX}_llama31_8b_tp{N}_profile.csv,
# ${PREFIX}_llama31_70b_tp{N}_profile.csv, ${PREFIX}_allreduce_tp{N}.csv, matching NVML traces
# (*_nvml_trace.csv), *_summary.json and ${PREFIX}_tp_run.log.
# Knobs (env): TPS (default: 1 2 4 capped at the GPU count), BATCH_SIZES, CONTEXTS, PREFILL, MIXED,
# MIN_TIME_S, AR_TOKENS, LAYERS_70B (layers of the 70B shape to build; default all 80).
set -u
OUT=${OUT:-calibration/data/tp_run}
PREFIX=${PREFIX:-gpu}
PY=${PYTHON:-python3}
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
TPS=${TPS:-$(for t in 1 2 4 8; do [ "$t" -le "$NGPU" ] && printf '%s ' "$t"; done)}
BATCH_SIZES=${BATCH_SIZES:-1,8,32,128}
CONTEXTS=${CONTEXTS:-512,2048}
PREFILL=${PREFILL:-128,512,2048}
MIXED=${MIXED:-512:16:1024,2048:4:4096}
MIN_TIME_S=${MIN_TIME_S:-1.0}
AR_TOKENS=${AR_TOKENS:-1,2,4,8,16,32,64,128,256,512,2048}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd)
mkdir -p "$OUT"
LOG="$OUT/${PREFIX}_tp_run.log"
: > "$LOG"
{
  echo "# date: $(date -u +%FT%TZ)"; echo "# host: $(uname -a)"; echo "# gpus: $NGPU; tp degrees: $TPS"
  nvidia-smi 2>&1; nvidia-smi topo -m 2>&1
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'nccl', torch.cuda.nccl.version())" 2>&1
} > "$OUT/${PREFIX}_tp_env.txt"

profile() {  # name spec tp [extra args...]
  local name=$1 spec=$2 tp=$3; shift 3
  echo "== $name TP=$tp" | tee -a "$LOG"
  $PY -m fluidserve calibrate profile --backend torch --model-spec "$spec" --model "$name" --device cuda \
    --dtype bfloat16 --tensor-parallel "$tp" --batch-sizes "$BATCH_SIZES" --contexts "$CONTEXTS" \
    --prefill-tokens "$PREFILL" --mixed "$MIXED" --min-time-s "$MIN_TIME_S" --power-period-s 0.1 \
    --output-dir "$OUT" --out "${PREFIX}_${name}_tp${tp}_profile.csv" --trace-out "${PREFIX}_${name}_tp${tp}_nvml_trace.csv" \
    --json --no-progress "$@" > "$OUT/${PREFIX}_${name}_tp${tp}_summary.json" 2>> "$LOG"
  echo "rc=$?" >> "$LOG"
}

for tp in $TPS; do
  profile llama31_8b calibration/llama31_8b_spec.json "$tp" --allreduce-tokens "$AR_TOKENS" --allreduce-out "${PREFIX}_allreduce_tp${tp}.csv"
done
for tp in $TPS; do
  [ "$tp" -ge 2 ] || continue
  profile llama31_70b calibration/llama31_70b_spec.json "$tp" ${LAYERS_70B:+--layers $LAYERS_70B}
done
ls -la "$OUT" | tee -a "$LOG"
