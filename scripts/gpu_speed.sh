#!/usr/bin/env bash
# Issue #23's GPU speed run (benchmarks/gpu_speed.py) in ONE device call: installs what the image lacks from the
# carried wheels, installs linearize from this tree, runs the measurements under a hard timeout. Output under $OUT:
# gpu_speed.jsonl (one JSON per measurement, written as measured), gpu_speed.md (the tables, printed at the end),
# profile_*.txt (the profiler's tables), gpu_speed.log (everything printed).
#
#   bash scripts/gpu_speed.sh --prepare   # HERE, once: the wheels into .whl/ (git-ignored), their list and size
#   bash scripts/gpu_speed.sh --cpu       # HERE: the dry run (tiny shapes, short lengths, every section; < 1 min)
#   bash scripts/gpu_speed.sh             # on the device machine (one H200), carrying .whl:
#
#     run(command="bash scripts/gpu_speed.sh", carry=[".whl"], timeout_s=420)
#
# Time: GPU_SPEED_SECONDS (default 360) for the whole call: the installs (~30-60 s), then the Python run with its
# deadline at what is left less 20 s, killed 5 s before the end whatever happens; each section of the run has its
# own budget inside that (benchmarks/gpu_speed.py's SECTIONS). Nothing is downloaded on the device: the models are
# random-weight builds of the SmolLM2-135M and Llama-3.2-1B configs.
#
# What the image (torch 2.11+cu130, triton 3.6, transformers 5.17, accelerate, safetensors 0.8, tokenizers 0.23.2,
# huggingface_hub 1.33, einops, regex, peft, numpy, psutil, setuptools) lacks, carried in .whl/ (python 3.12,
# manylinux x86_64): transformers 5.24.0 (the project needs >= 5.24; its other needs are met by the image:
# huggingface-hub >= 1.31, tokenizers >= 0.23.1, safetensors >= 0.8), fla-core and flash-linear-attention 0.6.0
# (fla's kernels; fla-core needs einops), regex (transformers checks regex >= 2025.10.22 at import; the image's
# version is not on record). .whl/build/ holds setuptools, used only if the image's is older than 77 (the
# project's SPDX license string). Not needed by this run and not carried: datasets, gguf, lm-eval, deepspeed, peft.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
START=$(date +%s)
MODE=device
case "${1:-}" in
    --prepare) MODE=prepare ;;
    --cpu) MODE=cpu ;;
    "") ;;
    *) echo "usage: $0 [--prepare | --cpu]" >&2; exit 2 ;;
esac

WHEELS=(transformers==5.24.0 fla-core==0.6.0 flash-linear-attention==0.6.0 regex==2026.11.19)
BUILD_WHEELS=(setuptools==84.2.1)

if [ "$MODE" = prepare ]; then
    set -e
    PY=${PYTHON:-python3}
    git check-ignore -q .whl/x.whl || { echo "ERROR: .whl/ is not git-ignored (.gitignore lists /.whl/)" >&2; exit 1; }
    rm -rf .whl
    mkdir -p .whl/build
    PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
              --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    "$PY" -m pip download -q --no-deps "${PLATFORM[@]}" -d .whl "${WHEELS[@]}"
    "$PY" -m pip download -q --no-deps "${PLATFORM[@]}" -d .whl/build "${BUILD_WHEELS[@]}"
    ls -l .whl/*.whl .whl/build/*.whl | awk '{printf "%10d  %s\n", $5, $9}'
    echo "total: $(du -cb .whl/*.whl .whl/build/*.whl | tail -1 | cut -f1) bytes ($(du -sh .whl | cut -f1))"
    exit 0
fi

if [ "$MODE" = cpu ]; then
    OUT=${OUT:-/tmp/gpu-speed-cpu}
    mkdir -p "$OUT"
    PY=${PYTHON:-python}
    timeout --kill-after=5 110 "$PY" benchmarks/gpu_speed.py --cpu --out "$OUT" --seconds 100 2>&1 | tee "$OUT/gpu_speed.log"
    exit "${PIPESTATUS[0]}"
fi

# ---- on the device machine
TOTAL=${GPU_SPEED_SECONDS:-360}
OUT=${OUT:-/tmp/gpu-speed-out}
SITE=${SITE:-/tmp/site}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$SITE"
LOG=$OUT/gpu_speed.log
say() { echo "[gpu_speed.sh +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
die() { say "ERROR: $*"; exit 1; }
PIP=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check --upgrade)

ls .whl/*.whl >/dev/null 2>&1 || die "no wheels in .whl/ (run --prepare here, then carry .whl)"
say "installing $(ls .whl/*.whl | wc -l) wheels into $SITE"
"${PIP[@]}" --target "$SITE" .whl/*.whl 2>&1 | tee -a "$LOG" || die "wheel install failed"
export PYTHONPATH=$SITE PYTHONSAFEPATH=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# PYTHONSAFEPATH=1: a python run from the repository root must import the installed linearize, not the source folder
# ./linearize (it lacks the subpackages the install maps in).

buildpath=$SITE
if ! "$PY" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null; then
    ls .whl/build/setuptools-*.whl >/dev/null 2>&1 || die "$PY lacks setuptools >= 77 and .whl/build has none"
    say "the image's setuptools is older than 77: installing the carried one (build only)"
    "${PIP[@]}" --target "$SITE-buildtools" .whl/build/setuptools-*.whl 2>&1 | tee -a "$LOG"
    buildpath=$SITE-buildtools:$SITE
fi
# The project from a clean copy of what its build reads (a stale build/ could ship deleted modules).
src=$(mktemp -d)
tar -cf - --exclude=__pycache__ pyproject.toml setup.py README.md linearize kernels convert distill evals data \
    | tar -xf - -C "$src"
say "installing linearize into $SITE"
PYTHONPATH=$buildpath "${PIP[@]}" --no-build-isolation --target "$SITE" "$src" 2>&1 | tee -a "$LOG" \
    || die "linearize install failed"
rm -rf "$src"

"$PY" scripts/installed_versions.py "$SITE" --modules transformers,linearize,linearize.evals.bench \
    --dists torch,triton,transformers,fla-core,flash-linear-attention,huggingface_hub,tokenizers,safetensors,regex,einops,setuptools,linearize \
    2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || die "the installed packages do not import as they should"
# Without fla the run goes on: the student then runs the torch forms (recorded in the versions).
"$PY" -c "import fla.ops" 2>/dev/null && say "fla.ops imports" || say "fla.ops does NOT import: the student runs the torch forms"

elapsed=$(( $(date +%s) - START ))
deadline=$(( TOTAL - elapsed - 20 ))
limit=$(( TOTAL - elapsed - 5 ))
[ "$deadline" -ge 60 ] || die "only ${deadline}s left for the measurements"
say "setup took ${elapsed}s; measuring for at most ${deadline}s (killed at ${limit}s)"
timeout --kill-after=5 "$limit" "$PY" benchmarks/gpu_speed.py --out "$OUT" --seconds "$deadline" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if [ "$rc" != 0 ]; then
    say "gpu_speed.py exit status $rc$([ "$rc" = 124 ] && echo ' (timed out)'); what it measured:"
    [ -f "$OUT/gpu_speed.jsonl" ] && "$PY" benchmarks/gpu_speed.py --render "$OUT/gpu_speed.jsonl" | tee "$OUT/gpu_speed.md"
fi
say "done: $OUT/gpu_speed.md, $OUT/gpu_speed.jsonl, $LOG"
exit "$rc"
