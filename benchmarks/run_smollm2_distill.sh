#!/usr/bin/env bash
# Distillation quality on the embedded SmolLM2-135M-Instruct with the main job's CPU defaults
# (convert -> 50k tokens attention transfer -> 40k tokens KD with LoRA r=8 -> held-out perplexity of
# teacher and student on the held-out split of the default corpus; 2 CPU cores):
#   lolcats on all layers              -> benchmarks/smollm2/distill-cpu-default.txt
#   lolcats keeping 25% of attention   -> benchmarks/smollm2/distill-cpu-hybrid25.txt
#   the same hybrid, 160k tokens        -> benchmarks/smollm2/distill-cpu-hybrid25-160k.txt
# Run from the repo root after `bash scripts/setup.sh`. ONLY=default, hybrid25 or hybrid25-160k runs one.
set -euo pipefail
. .venv/bin/activate
export HF_HUB_OFFLINE=1
W=${WORK:-/tmp/linearize-bench}
mkdir -p "$W" benchmarks/smollm2
run() {  # name, extra arguments
  local name=$1; shift
  { echo "\$ time linearize --base llama --to lolcats $* --out $W/main-$name --overwrite"
    { time linearize --base llama --to lolcats "$@" --out "$W/main-$name" --overwrite 2>/dev/null; } 2>&1
  } | tee "benchmarks/smollm2/distill-cpu-$name.txt"
}
case "${ONLY:-all}" in all|default) run default ;; esac
case "${ONLY:-all}" in all|hybrid25) run hybrid25 --keep-attention 0.25 ;; esac
case "${ONLY:-all}" in all|hybrid25-160k) run hybrid25-160k --keep-attention 0.25 --tokens 160000 ;; esac
