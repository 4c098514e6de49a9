"""Decode speed of the code at a git revision against the working tree, in alternating runs of
``decode_vs_teacher.py`` (old, new, old, new, ...): whole runs on a shared machine move by more than one
change gains, so a change is measured against the code before it, run beside it. Both trees run the working
tree's benchmark script; each is imported as ``linearize`` through a folder of links laid out as setup.py
installs the package, put first on PYTHONPATH (an editable install's finder is set aside).

    python benchmarks/decode_ab.py 95aa8ed --pairs 3 --out benchmarks/smollm2/decode-vs-teacher.md
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("kernels", "data", "convert", "distill", "evals")  # setup.py's ROOTS, below linearize/


def package_view(tree, into):
    """A folder whose ``linearize`` package is ``tree``'s source, laid out as the installed package."""
    pkg = Path(into) / "linearize"
    pkg.mkdir(parents=True)
    for entry in (Path(tree) / "linearize").iterdir():
        (pkg / entry.name).symlink_to(entry)
    for sub in SUBPACKAGES:
        (pkg / sub).symlink_to(Path(tree) / sub)
    return into


# An editable install's finder would answer before PYTHONPATH: drop it, then run the script as __main__.
BOOT = (
    "import runpy, sys; sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '')"
    ".startswith('__editable__')]; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def run(view, args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([view, os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable,
        "-c",
        BOOT,
        str(ROOT / "benchmarks" / "decode_vs_teacher.py"),
        "--contexts",
        str(args.context),
        "--rounds",
        str(args.rounds),
    ]
    out = subprocess.run(cmd, env=env, cwd=view, capture_output=True, text=True, check=True).stdout
    return next(line for line in out.splitlines() if line.startswith(f"| {args.context} |"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", help="the git revision to compare the working tree with")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default=None, help="markdown file to append the table to")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old_tree), args.rev], check=True
        )
        try:
            views = {
                args.rev: package_view(old_tree, Path(tmp) / "old"),
                "working tree": package_view(ROOT, Path(tmp) / "new"),
            }
            lines = [
                f"`python {' '.join(sys.argv)}`, {time.strftime('%Y-%m-%d')}: decode_vs_teacher.py "
                f"--contexts {args.context} --rounds {args.rounds}, alternating; cells as that script prints them",
                "",
                "| pair | code | teacher | all-lolcats | main-recipe-shape |",
                "|---|---|---|---|---|",
            ]
            for pair in range(1, args.pairs + 1):
                for name, view in views.items():
                    cells = run(str(view), args).strip("|").split("|")[1:]
                    lines.append(f"| {pair} | {name} |" + "|".join(cells) + "|")
                    print(lines[-1], flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
