#!/usr/bin/env bash
# splitleak's GPU check, run from the checkout's root on the machine with the GPU (adapted from the script that
# measured issue 25's table): install the wheels that machine lacks, then `pytest -m gpu`, then the GPU
# benchmark (python -m benchmarks.gpu --device cuda), each step under its own timeout inside BUDGET seconds.
# A failing step is recorded and the script goes on; it exits 0 unless the checkout itself is unusable.
#
# GPU:    OUT=<folder whose files come back> bash benchmarks/gpu_check/check.sh
# Smoke:  SMOKE=1 OUT=/tmp/gpucheck PY=.venv/bin/python bash benchmarks/gpu_check/check.sh   (CPU, tiny, ~3 min)
#
# Wheels: the device machine has torch, torchvision, grpcio, protobuf, opencv, scikit-image, safetensors and
# transformers, not diffusers or scikit-video (and maybe older grpcio / protobuf than the generated stubs need).
# The device tool copies the checkout only: put the wheels in .whl/ (gitignored; fill it with
# benchmarks/gpu_check/fetch_wheels.sh) and carry it: run(carry=[".whl"], ...). Missing modules are installed
# from there into $SITE, never over the machine's own packages.
#
# $OUT gets: log.txt, steps.tsv (step, rc, seconds, timeout), env.txt, pytest.txt, gpu.json (the benchmark's
# rows, written after every row, so a timed-out run still returns what it measured), prior/ logs.
set -u -o pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 2
: "${OUT:?set OUT to the folder whose files come back}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/log.txt"
SMOKE="${SMOKE:-0}"
PY="${PY:-python3}"
WHL="${WHL:-$ROOT/.whl}"
SITE="${SITE:-/tmp/splitleak-site}"
WORK="${WORK:-/tmp/splitleak-gpu}"
BUDGET="${BUDGET:-540}"     # seconds for the whole script (~9 minutes)
RESERVE=10
START=$(date +%s)
: > "$OUT/steps.tsv"

if [ "$SMOKE" = 1 ]; then
  DEV=cpu; PYTEST_CAP=120; BENCH_ARGS="--quick --device cpu --rows dmb-iteration,do,train-prior-step"
  PRIOR_STEPS="--vae-steps 2 --decoder-steps 0 --steps 2"; PRIOR_CAP=60; BENCH_CAP=240
else
  DEV=cuda; PYTEST_CAP=120; BENCH_ARGS="--device cuda"
  PRIOR_STEPS="--vae-steps 300 --decoder-steps 200 --steps 600"; PRIOR_CAP=90; BENCH_CAP=300
fi

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(date +%s) + START )); }
say() { echo "[$(elapsed)s] $*" | tee -a "$LOG"; }

# run NAME CAP COMMAND: COMMAND under timeout min(CAP, time left - RESERVE), teed into the log; a line in steps.tsv
run() {
  local name=$1 cap=$2 cmd=$3
  local room=$(( $(left) - RESERVE ))
  local t=$(( cap < room ? cap : room ))
  if (( t < 5 )); then
    say "SKIP $name: no time left"; printf '%s\tskipped\t0\t%s\n' "$name" "$cap" >> "$OUT/steps.tsv"; return 99
  fi
  say "== $name (timeout ${t}s): $cmd"
  local s; s=$(date +%s.%N)
  timeout -k 5 "$t" bash -c "$cmd" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  local d; d=$(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$d" "$t" >> "$OUT/steps.tsv"
  say "-- $name: rc $rc in ${d}s$( [ "$rc" = 124 ] && echo ' (TIMED OUT)')"
  return "$rc"
}

say "splitleak GPU check: SMOKE=$SMOKE DEV=$DEV PY=$PY BUDGET=${BUDGET}s ROOT=$ROOT"
rm -rf "$WORK" && mkdir -p "$WORK"

# ---- 0. the wheels this machine lacks, into $SITE ---------------------------------------------------------
run setup 60 "bash '$ROOT/benchmarks/gpu_check/setup.sh' '$PY' '$WHL' '$SITE'"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# ---- 1. environment ---------------------------------------------------------------------------------------
run env 30 "nvidia-smi -L 2>/dev/null; $PY -c 'import sys, torch, diffusers, grpc, google.protobuf as pb
print(sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"-\", \"diffusers\", diffusers.__version__,
      \"grpc\", grpc.__version__, \"protobuf\", pb.__version__)' | tee '$OUT/env.txt'"

# ---- 2. the tests that need a GPU ------------------------------------------------------------------------
run pytest-gpu "$PYTEST_CAP" "set -o pipefail; $PY -m pytest -q -rfEs -p no:cacheprovider -m gpu 2>&1 | tee '$OUT/pytest.txt'"

# ---- 3. a prior for the feature rows (short: the rows time the attacks; PSNR is indicative) ---------------
PRIOR="$WORK/prior"
run train-prior "$PRIOR_CAP" "$PY -m splitleak train-prior --source sample:bikes --frames 175 --latent --size 64 \
  --batch 8 --save-every 1000000 --quiet --device $DEV $PRIOR_STEPS --preview 0 --out '$PRIOR'"
mkdir -p "$OUT/prior" && cp "$PRIOR"/prior.json "$PRIOR"/train_log.csv "$OUT/prior/" 2>/dev/null
PRIOR_ARG=""; [ -f "$PRIOR/prior.json" ] && PRIOR_ARG="--prior '$PRIOR'"

# ---- 4. the benchmark: every row on the GPU, then on the CPU ---------------------------------------------
run benchmark "$BENCH_CAP" "$PY -m benchmarks.gpu $BENCH_ARGS $PRIOR_ARG --work '$WORK/bench' --json '$OUT/gpu.json'"

say "done in $(elapsed)s; steps:"
column -t "$OUT/steps.tsv" 2>/dev/null | tee -a "$LOG" || tee -a "$LOG" < "$OUT/steps.tsv"
exit 0
