#!/usr/bin/env bash
# Fetch the named out-of-domain corpora (gnu-manuals, c-code, jargon; or the names given) from Debian
# packages (apt-get download + dpkg-deb -x) into $LINEARIZE_CACHE/corpora (default ~/.cache/linearize),
# once; later runs reuse them. Pass --count-tokens to print SmolLM2 token counts, --force to refetch.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "$(dirname "${PYTHON:-.venv/bin/python}")/linearize" corpora fetch "$@"
