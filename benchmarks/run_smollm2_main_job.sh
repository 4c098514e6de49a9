#!/usr/bin/env bash
# The main job's CPU default on the embedded SmolLM2-135M-Instruct, exactly as a user runs it, timed on
# 2 cores: convert (KL-ranked plan) -> transfer -> KD -> quality on the out-of-domain corpora at the
# training length (256) and 8x it (2048), per position, passkey at 2048, MQAR
#   -> benchmarks/smollm2/main-job-cpu.txt
# then the same student and the teacher over 512-token windows of both corpora, per position
#   -> benchmarks/smollm2/main-job-eval512-<corpus>.md
# and decode speed and state of teacher and student in one interleaved run at 512 and 8192 tokens
#   -> benchmarks/smollm2/main-job-bench.md
# Run from the repo root after `bash scripts/setup.sh`. PART=bench skips the main job (reuses its output).
set -euo pipefail
. .venv/bin/activate
export HF_HUB_OFFLINE=1
W=${WORK:-/tmp/linearize-bench}
mkdir -p "$W" benchmarks/smollm2
bash scripts/fetch_corpora.sh >/dev/null  # the out-of-domain corpora, once (Debian packages)
if [ "${PART:-all}" != bench ]; then
{ echo "\$ time linearize --base llama --out $W/main-default --overwrite"
  { time linearize --base llama --out "$W/main-default" --overwrite 2>/dev/null; } 2>&1
} | tee benchmarks/smollm2/main-job-cpu.txt
for corpus in gnu-manuals c-code; do
  linearize eval "$W/main-default" --teacher llama --data "corpus:$corpus" --split all --seq-len 512 \
    --max-tokens 8192 --by-position --out "$W/eval512-$corpus"
  cp "$W/eval512-$corpus/eval.md" "benchmarks/smollm2/main-job-eval512-$corpus.md"
done
fi
[ "${PART:-all}" != eval ] || exit 0
linearize bench "$W/main-default" --teacher llama --contexts 512,8192 --decode-tokens 16 --repeats 3 \
  --out "$W/bench-main-default"
cp "$W/bench-main-default/bench.md" benchmarks/smollm2/main-job-bench.md
