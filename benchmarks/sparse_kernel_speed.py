"""Speed of LoLA's sparse cache in its reference form (kernels/window_attn/sparse.py) against the plain window +
linear layer (the chunked form), one layer at SmolLM2-135M's shape (9 query heads, 3 key/value heads, head 64,
feature 128, window 64, 4 sinks, decay), one thread, best of 3, outputs compared. ``--against REV`` times the
sparse kernel of a git revision beside today's (the file as it was, run from a temporary copy).

    python benchmarks/sparse_kernel_speed.py --lengths 2048,4096 --against 07affb5
"""

import argparse
import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from linearize.kernels.window_attn import sparse
from linearize.kernels.window_attn.dispatch import window_attn


def kernel_at(rev):
    """kernels/window_attn/sparse.py as it was at ``rev``, imported from a temporary copy."""
    root = Path(__file__).resolve().parent.parent
    text = subprocess.run(
        ["git", "show", f"{rev}:kernels/window_attn/sparse.py"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "sparse_at_rev.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("sparse_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="2048,4096")
    parser.add_argument("--budget", type=int, default=256)
    parser.add_argument("--select", default="mean", choices=sparse.SELECTIONS)
    parser.add_argument("--against", help="a git revision whose sparse kernel is timed beside today's")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    H, Hk, D, F, W = 9, 3, 64, 128, 64
    forms = {"sparse": sparse}
    if args.against:
        forms[f"sparse at {args.against}"] = kernel_at(args.against)
    print(f"| tokens | window + linear (chunk) | {' | '.join(forms)} | max diff |")
    print(f"|---|---|{'---|' * len(forms)}---|")
    for T in map(int, args.lengths.split(",")):
        q = torch.randn(1, T, H, D)
        k, v = (torch.randn(1, T, Hk, D).repeat_interleave(H // Hk, 2) for _ in range(2))
        fq, fk = torch.rand(1, T, H, F), torch.rand(1, T, H, F)
        factor, log_decay = torch.rand(H), -0.01 * torch.rand(H)
        sinks = (torch.randn(1, 4, H, D), torch.randn(1, 4, H, D), torch.ones(1, T, 4, dtype=torch.bool))
        kw = dict(log_decay=log_decay, sinks=sinks, groups=H // Hk, select=args.select)
        runs = {"chunk": lambda: window_attn(q, k, fq, fk, v, factor, W, D**-0.5, mode="chunk", log_decay=log_decay)}
        for name, module in forms.items():
            runs[name] = lambda m=module: m.sparse_window_attn(q, k, fq, fk, v, factor, W, D**-0.5, args.budget, **kw)
        best, outs = {}, {}
        with torch.no_grad():
            for _ in range(3):  # interleaved, so a busy moment hits every form
                for name, run in runs.items():
                    t = time.perf_counter()
                    outs[name] = run()[0]
                    best[name] = min(best.get(name, 9e9), time.perf_counter() - t)
        diff = max((outs[n] - outs["sparse"]).abs().max().item() for n in forms)
        cells = " | ".join(f"{best[n]:.2f} s ({best[n] / best['chunk']:.1f}x)" for n in forms)
        print(f"| {T} | {best['chunk']:.2f} s | {cells} | {diff:.1e} |")


if __name__ == "__main__":
    main()
