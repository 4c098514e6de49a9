#!/usr/bin/env bash
# Teacher (embedded SmolLM2-135M-Instruct) vs an all-converted LoLCATs student vs a hybrid keeping 25%
# of attention layers, both UNDISTILLED (what conversion alone does; distilled results: run_smollm2_distill.sh):
# speed/memory (contexts interleaved, median of 5 x 32 decode steps), then quality.
# Run from the repo root after `bash scripts/setup.sh`; results land in benchmarks/smollm2/.
# PART=bench or PART=eval runs one half.
set -euo pipefail
. .venv/bin/activate
export HF_HUB_OFFLINE=1
W=${WORK:-/tmp/linearize-bench}
mkdir -p "$W" benchmarks/smollm2
linearize convert --base llama --to lolcats --out "$W/smol-lolcats" --overwrite
linearize convert --base llama --to lolcats --keep-attention 0.25 --out "$W/smol-lolcats-hybrid25" --overwrite
if [ "${PART:-all}" != eval ]; then
for student in smol-lolcats smol-lolcats-hybrid25; do
  linearize bench "$W/$student" --teacher llama --contexts 512,2048,8192,16384 --out "$W/bench-$student"
done
linearize report "$W/bench-smol-lolcats/bench.json" "$W/bench-smol-lolcats-hybrid25/bench.json" \
  --out benchmarks/smollm2/bench.md
cp "$W/bench-smol-lolcats/bench.json" benchmarks/smollm2/bench-lolcats.json
cp "$W/bench-smol-lolcats-hybrid25/bench.json" benchmarks/smollm2/bench-hybrid25.json
cp "$W/bench-smol-lolcats/bench.png" benchmarks/smollm2/bench-lolcats.png
fi
[ "${PART:-all}" != bench ] || exit 0
for student in smol-lolcats smol-lolcats-hybrid25; do
  linearize eval "$W/$student" --teacher llama --suite ppl,agreement,recall --passkey-lengths 256,512,1024,2048 \
    --max-tokens 8192 --out "$W/eval-$student"
done
linearize report "$W/eval-smol-lolcats/eval.json" "$W/eval-smol-lolcats-hybrid25/eval.json" --out benchmarks/smollm2/eval.md
cp "$W/eval-smol-lolcats/eval.json" benchmarks/smollm2/eval-lolcats.json
cp "$W/eval-smol-lolcats-hybrid25/eval.json" benchmarks/smollm2/eval-hybrid25.json
