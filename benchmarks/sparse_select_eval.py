"""`linearize eval` with the converted layers' sparse-cache selection set to another score (an ablation: the layers
choose by `linearize.convert.linear_mixer.SPARSE_SELECT`, 'attention', which no command-line option changes yet).

    python benchmarks/sparse_select_eval.py mean eval STUDENT --sparse-cache 256 --suite recall ...

The first argument is the selection (kernels/window_attn/sparse.py: error, attention or mean); the rest is a
`linearize` command line."""

import sys

import linearize.convert.linear_mixer as linear_mixer
from linearize.cli import main
from linearize.kernels.window_attn.sparse import SELECTIONS

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in SELECTIONS:
        sys.exit(f"usage: python {sys.argv[0]} {{{','.join(SELECTIONS)}}} eval MODEL [linearize eval options]")
    linear_mixer.SPARSE_SELECT = sys.argv[1]  # the layers read it at every call
    sys.argv = ["linearize", *sys.argv[2:]]
    sys.exit(main())
