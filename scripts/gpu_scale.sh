#!/usr/bin/env bash
# Issue #9's GPU points as one prepared script: run on a CUDA machine (after scripts/device_bootstrap.sh), output
# under $OUT. Each measurement has its own timeout, so a slow one cannot eat the others' time.
#
#   bash scripts/gpu_scale.sh [--cpu] SECTION...      (no SECTION: all of them, in the order below)
#
#   llama-1b, llama-8b, qwen3-1.7b, qwen3-8b   benchmarks/scale_rehearsal.py on that shape (random weights, bf16):
#              conversion peak GPU memory, transfer and KD tokens/s and peak memory, largest batch at 2k and 8k
#   mainjob    the main job on the embedded model (SmolLM2-135M-Instruct) in bf16 on fla: tokens/s per stage
#   bench      `linearize bench` teacher (SDPA) vs the main job's student at 4k, 16k, 32k, 64k (batch 1), then the
#              largest batch that fits at each length, with its prefill tokens/s and decode ms/step
#   zero       transfer and KD on the 1B shape on the DeepSpeed engine, ZeRO-2 then ZeRO-3, a few steps, one GPU
#              under torchrun (DeepSpeed is not in the image: installed from .whl-ds into $SITE)
#
# --cpu: a dry run of every section on this machine's CPU, tiny shapes (tiny-llama, tiny-qwen3) and lengths (the
# script itself checked; no number means anything). Output: $OUT/gpu_scale.log (everything), $OUT/tables.md (each
# section's tables), $OUT/results.jsonl (one JSON per measurement). Without $OUT: /tmp/gpu-scale-out.
#
# On the device machine: each call < 10 minutes, 30 device-minutes a session (machine start included), and what
# the bootstrap installs lives only while the machine stays warm (30 s after a call): make the calls back to back.
# Prepare here once: `bash scripts/gpu_scale.sh --prepare` (DeepSpeed and its pure-Python needs as wheels in
# .whl-ds; .whl and .carry2 as scripts/device_bootstrap.sh says). Timeouts as measured on an H200 on 2026-11-26
# (benchmarks/gpu-h200/: the 1B search, the main job and both bench runs outran the first, shorter ones), about
# 29 device-minutes:
#   1. carry .whl .carry2/smollm2.part-aa:  bash scripts/device_bootstrap.sh 1                           (~1 min)
#   2. carry .carry2/smollm2.part-ab:  bash scripts/device_bootstrap.sh 2 && bash scripts/gpu_scale.sh llama-8b (~5 min)
#   3. no carry:  bash scripts/device_bootstrap.sh 2 && bash scripts/gpu_scale.sh llama-1b mainjob       (~9 min)
#   4. no carry:  bash scripts/device_bootstrap.sh 2 && bash scripts/gpu_scale.sh bench                  (<10 min)
#   5. carry .whl-ds:  bash scripts/device_bootstrap.sh 2 && bash scripts/gpu_scale.sh zero            (~4 min)
#   then, with time left: qwen3-1.7b (~5 min), qwen3-8b (~5 min).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ALL=(llama-1b llama-8b mainjob bench zero qwen3-1.7b qwen3-8b)
CPU=0 PREPARE=0 SECTIONS=()
for a in "$@"; do
    case "$a" in
        --cpu) CPU=1 ;;
        --prepare) PREPARE=1 ;;
        *) [[ " ${ALL[*]} " == *" $a "* ]] || { echo "usage: $0 [--cpu] [${ALL[*]}] | --prepare" >&2; exit 2; }
           SECTIONS+=("$a") ;;
    esac
done
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=("${ALL[@]}")

if [ "$PREPARE" = 1 ]; then  # here, with the registry at hand: DeepSpeed 0.19.8 (pure Python) and what it needs
    set -e
    mkdir -p .whl-ds
    grep -qx '/.whl-ds/' .git/info/exclude || echo '/.whl-ds/' >> .git/info/exclude
    PY=${PYTHON:-python3}
    "$PY" -m pip wheel -q --no-deps -w .whl-ds deepspeed==0.19.8
    "$PY" -m pip download -q --no-deps -d .whl-ds hjson==3.1.0 pydantic==2.14.4 annotated-types==0.8.0 \
        typing-inspection==0.4.5 typing-extensions==4.16.0
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 -d .whl-ds pydantic-core==2.50.5
    ls -la .whl-ds
    exit 0
fi

OUT=${OUT:-/tmp/gpu-scale-out}
mkdir -p "$OUT"
LOG=$OUT/gpu_scale.log TABLES=$OUT/tables.md RESULTS=$OUT/results.jsonl
WORK=$(mktemp -d /tmp/gpu-scale.XXXX)
STUDENT=/tmp/gpu-scale-main  # the main job's student, kept for the bench section (also in a later call)
if [ "$CPU" = 1 ]; then
    PY=${PYTHON:-python}
    LINEARIZE=(linearize)
    SLOW=4  # the timeouts, stretched: 2 shared cores run even tiny shapes slowly
    # one length for the batch searches, and a memory budget that some probes exceed (the bisection runs)
    REHEARSE=(--device cpu --steps 2 --seq-len 32 --batch-size 2 --batch-search on --search-seq-lens 96 --max-batch 8
              --memory-budget 0.52)
    ZERO=(--device cpu --steps 2 --seq-len 32 --batch-size 2)
    MAINJOB=(--dtype float32 --tokens 1024 --seq-len 64 --batch-size 4 --keep-attention 0.25 --eval-tokens 256
             --passkey-lengths "" --mqar-pairs "")  # the recall tasks generate: minutes on a loaded CPU
    PLAN=(--keep-attention 0.25)  # the bench's fallback student: no KL ranking pass on CPU
    CONTEXTS=256 DECODE=(--decode-tokens 4 --repeats 1) BENCH_MAX=(--max-batch 4 --search-seconds 60)
else
    export PYTHONPATH=${SITE:-/tmp/site} PYTHONSAFEPATH=1 PATH=${SITE:-/tmp/site}/bin:$PATH HF_HUB_OFFLINE=1 \
        LINEARIZE_CACHE=/tmp/linearize-cache PYTHONUNBUFFERED=1
    PY=${PYTHON:-python3}
    LINEARIZE=("$PY" -m linearize.cli)
    SLOW=1
    # a search stops doubling once it has taken 25 s at one length (the table then says "≥ N")
    REHEARSE=(--device cuda --steps 3 --seq-len 1024 --batch-size 8 --search-seconds 25)
    ZERO=(--device cuda --steps 3 --seq-len 1024 --batch-size 8)
    MAINJOB=(--dtype bfloat16 --tokens 200000 --seq-len 1024 --batch-size 8 --passkey-lengths 2048 --mqar-pairs 8)
    PLAN=(--keep-attention auto:8 --rank-by kl)  # the main recipe's plan for SmolLM2
    CONTEXTS=4096,16384,32768,65536 DECODE=(--decode-tokens 16 --repeats 2)
    BENCH_MAX=(--max-batch 128 --search-seconds 20)
fi

say() { echo "[gpu_scale $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }
# run SECONDS CMD...: the command under a timeout, its output into the log; the exit status is said, not fatal.
run() {
    local limit=$(( $1 * SLOW )); shift
    say "\$ $*  (timeout ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || say "exit status $rc$([ "$rc" = 124 ] && echo ' (timed out)')"
    return 0
}
collect() {  # collect JSON_FILE (complete, or cut short by a timeout): its tables to tables.md, a line to results.jsonl
    [ -f "$1" ] || return 0
    "$PY" benchmarks/scale_rehearsal.py --render "$1" --md "$TABLES" > /dev/null
    { tr -d '\n' < "$1"; echo; } >> "$RESULTS"
    rm -f "$1"
}
rehearse() {  # rehearse SECONDS SHAPE ARGS...: one scale_rehearsal run (tiny shapes in a dry run), table and JSON kept
    local limit=$1 shape=$2; shift 2
    [ "$CPU" = 1 ] && shape=tiny-${shape%%-*}
    run "$limit" "$PY" benchmarks/scale_rehearsal.py --shape "$shape" --json "$WORK/r.json" "$@"
    collect "$WORK/r.json"
}

say "sections: ${SECTIONS[*]}; $([ "$CPU" = 1 ] && echo 'CPU dry run' || echo 'CUDA')"
"$PY" - <<'PYEOF' 2>&1 | tee -a "$LOG"
import importlib.metadata as md, torch
names = ("torch", "triton", "transformers", "flash-linear-attention", "peft", "accelerate", "deepspeed", "linearize")
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "-"
print("versions:", ", ".join(f"{n} {version(n)}" for n in names))
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
PYEOF
if [ "$CPU" = 0 ] && ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    say "no CUDA device: run with --cpu for a dry run"; exit 1
fi

for section in "${SECTIONS[@]}"; do
    say "=== $section"
    echo -e "\n## $section\n" >> "$TABLES"
    case "$section" in
    llama-1b|qwen3-1.7b) rehearse 300 "$section" "${REHEARSE[@]}" ;;
    llama-8b|qwen3-8b) rehearse 300 "$section" "${REHEARSE[@]}" ;;
    zero)
        if [ "$CPU" = 0 ] && ! "$PY" -c 'import deepspeed' 2>/dev/null; then
            if ! ls .whl-ds/*.whl >/dev/null 2>&1; then
                say "no deepspeed, and no .whl-ds to install it from (--prepare here, carry .whl-ds)"; continue
            fi
            "$PY" -m pip install -q --no-index --no-deps --no-compile --target "${SITE:-/tmp/site}" .whl-ds/*.whl 2>&1 \
                | tee -a "$LOG"
        fi
        for z in zero2 zero3; do
            rehearse 170 llama-1b "${ZERO[@]}" --stages transfer,kd --deepspeed "distill/configs/$z.json"
        done
        ;;
    mainjob)
        rm -rf "$STUDENT"
        start=$(wc -l < "$LOG")
        run 260 "${LINEARIZE[@]}" --base llama --out "$STUDENT" "${MAINJOB[@]}" --eval-data none --save-minutes 0 \
            --save-every 0
        { echo '```'; tail -n +"$((start + 1))" "$LOG" | grep -E "^(linearized|  (transfer|kd): |  in-domain|  passkey|  MQAR)"
          echo '```'; } >> "$TABLES"
        ;;
    bench)
        if [ ! -f "$STUDENT/config.json" ]; then  # the main job did not run (or failed): its conversion, undistilled
            say "no main-job student in $STUDENT: converting the embedded model with the main recipe (undistilled)"
            run 200 "${LINEARIZE[@]}" convert --base llama --to lolcats --decay 64 --sinks 4 "${PLAN[@]}" \
                --out "$STUDENT" --overwrite
        fi
        run 280 "${LINEARIZE[@]}" bench "$STUDENT" --teacher llama --contexts "$CONTEXTS" "${DECODE[@]}" \
            --out "$WORK/bench"
        [ -f "$WORK/bench/bench.md" ] && cat "$WORK/bench/bench.md" >> "$TABLES"
        [ -f "$WORK/bench/bench.json" ] && { tr -d '\n' < "$WORK/bench/bench.json"; echo; } >> "$RESULTS"
        run 300 "$PY" benchmarks/scale_rehearsal.py --bench-models llama "$STUDENT" --bench-contexts "$CONTEXTS" \
            "${BENCH_MAX[@]}" --json "$WORK/b.json"
        collect "$WORK/b.json"
        ;;
    esac
done
rm -rf "$WORK"
say "done: $LOG, $TABLES, $RESULTS"
