#!/usr/bin/env bash
# One device call for RESULTS.md: install the carried wheels (.whl), then each benchmark step under its
# own time limit, so one failure or overrun loses only that step. Everything lands in $OUT.
#   run(command="bash benchmarks/gpu_run.sh 400", carry=[".whl", "semdraw_widget/static"], timeout_s=420)
#   STEPS="checks inductor weak inductor768" bash benchmarks/gpu_run.sh 480   # what issue 6 still needs (~7 min)
#   STEPS="checks regions512 regions768 regionsxl" bash benchmarks/gpu_run.sh 540   # issue 14 (~9 min)
set -u
BUDGET=${1:-400}
OUT=${OUT:-/tmp/semdraw-bench}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - start))); }
log="$OUT/run.log"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >>"$log" 2>&1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$log"
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" 2>&1 | tee -a "$log"

STEPS=${STEPS:-"checks inductor weak inductor768 target s768 paper sdxl sweep"}
step() {  # step NAME LIMIT_S COMMAND...: run if listed in STEPS and time is left; print its table and JSON lines
  local name=$1 limit=$2; shift 2
  case " $STEPS " in *" $name "*) ;; *) return ;; esac
  local remaining; remaining=$(left)
  if [ "$remaining" -lt 25 ]; then echo "=== $name: skipped (${remaining}s left)" | tee -a "$log"; return; fi
  [ "$limit" -gt $((remaining - 10)) ] && limit=$((remaining - 10))
  echo "=== $name (limit ${limit}s, at $(( $(date +%s) - start ))s)" | tee -a "$log"
  timeout "$limit" "$@" >"$OUT/$name.out" 2>&1
  echo "rc=$?" | tee -a "$log"
  grep -E "^#|^ *size|^ *[0-9]+x[0-9]+|MultiDiffusion|Error|error|not available|\"check\"" "$OUT/$name.out" | cut -c1-600 | tee -a "$log"
  tail -c 3000 "$OUT/$name.out" >>"$log"; rm -f "$OUT/$name.out"
}

S="python3 -m benchmarks.stream --arch sd15"
step checks 150 python3 -m benchmarks.gpu_checks   # graph-capture failure and inductor graphs on the tiny model
# inductor: baseline, graphs and compiled graphs side by side; the compile (about a minute) is waited for, not timed
step inductor 300 $S --height 512 --width 512 --layers 4 --frames 150 --baseline --compile cudagraph,inductor --no-eager --json "$OUT/inductor.json"
step weak 120 $S --height 512 --width 512 --layers 4 --frames 150 --mask-strength 0.8 --baseline --compile --no-eager --json "$OUT/weak.json"
step inductor768 200 $S --height 768 --width 768 --layers 4 --frames 60 --compile inductor --no-eager --no-compare --json "$OUT/inductor768.json"
step target 150 $S --height 512 --width 512 --layers 4 --frames ${TARGET_FRAMES:-200} --baseline --compile --json "$OUT/target.json"
step s768 100 $S --height 768 --width 768 --layers 4 --frames ${S768_FRAMES:-60} --baseline --compile --no-eager --json "$OUT/s768.json"
step paper 50 python3 -m benchmarks.paper --arch sd15 --layers 4 --compile --json "$OUT/paper.json"
step sdxl 60 python3 -m benchmarks.stream --arch sdxl --height 1024 --width 1024 --layers 4 --frames 20 --warmup-frames 3 --compile --no-eager --no-compare --json "$OUT/sdxl.json"
step sweep 120 $S --sweep --frames 20 --warmup-frames 5 --compile --no-eager --json "$OUT/sweep.json"
# issue 14: both region modes side by side, inductor (waited for, not timed), item skipping (mask strength 0.8)
R="--layers 4 --mask-strength 0.8 --compile inductor --no-eager --no-compare --region-mode exact,attention"
step regions512 200 $S --height 512 --width 512 $R --frames 150 --json "$OUT/regions512.json"
step regions768 150 $S --height 768 --width 768 $R --frames 60 --json "$OUT/regions768.json"
step regionsxl 150 python3 -m benchmarks.stream --arch sdxl --height 1024 --width 1024 $R --frames 20 --warmup-frames 3 --json "$OUT/regionsxl.json"
step regionsweep 120 $S --height 512 --width 512 --layers 1,2,4,8 --compile --no-eager --no-compare --region-mode exact,attention --frames 20 --warmup-frames 5 --json "$OUT/regionsweep.json"
echo "done at $(( $(date +%s) - start ))s" | tee -a "$log"
