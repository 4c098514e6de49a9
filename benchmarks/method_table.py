"""The method table (issue #24): every recurrence at the main job's CPU budget, with the default's window design, so
users can pick a target by measured numbers.

Each row is the main job as a user runs it (`linearize --base llama ...`, the same tokens and stage settings as the
default), then `linearize bench` of the result against its teacher in the same process (decode ms/token at 512 and
8192 tokens of context). Every row but the default's takes the default's layer plan rule (12 of 30 layers kept as
softmax, ranked by the KL of converting each alone at the answers of multi-key retrieval probes: the ranking is the
row's own target's) and its window design: a 64-token softmax window with 4 sinks beside the recurrence, and a learned
decay of initial span 64 where the recurrence has none of its own (linear, t2r, hedgehog). The exportable recurrences
(mamba, gdn) also run without a window, the form `linearize export` writes natively.

Rows run one at a time (each is 20-40 minutes alone on 2 cores; never two at once) and accumulate, one JSON per row
in the results folder; `--render` writes the table from whatever rows are there:

    python benchmarks/method_table.py --rows mamba-nowindow,mamba          # run (and record) these rows
    python benchmarks/method_table.py --render                             # benchmarks/smollm2/methods/README table

Checkpoints go to --work (default /tmp/method-table/ROW), the row's record to --results (default
benchmarks/smollm2/methods/ROW.json): the command, the main job's quality block (config.linearize's
heldout_perplexity), its stage timings, the bench numbers and whether `linearize export` can write it natively.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "smollm2" / "methods"
PLAN = ["--keep-attention", "auto:12", "--rank-by", "kl-multikey"]  # the default's rule (pipeline.KEEP_SHARE)
WINDOW = ["--window", "64", "--sinks", "4"]
DECAY = ["--decay", "64"]  # only where the recurrence has no decay of its own
ROWS = {
    "lolcats": [],  # the default recipe, as `linearize --base llama` runs it
    "linear": ["--to", "linear", *WINDOW, *DECAY, *PLAN],
    "t2r": ["--to", "t2r", *WINDOW, *DECAY, *PLAN],
    "hedgehog": ["--to", "hedgehog", *WINDOW, *DECAY, *PLAN],
    "supra": ["--to", "supra", *WINDOW, *PLAN],
    "gla": ["--to", "gla", *WINDOW, *PLAN],
    "mamba": ["--to", "mamba", *WINDOW, *PLAN],
    "gdn": ["--to", "gdn", *WINDOW, *PLAN],
    "mamba-nowindow": ["--to", "mamba", *PLAN],
    "gdn-nowindow": ["--to", "gdn", *PLAN],
}
CONTEXTS = (512, 8192)


def linearize(*args, log):
    """`linearize ARGS` as a user types it, its output printed and appended to ``log`` as it comes; exits with one
    line if it fails."""
    line = "$ " + " ".join(["linearize", *args])
    print(line, flush=True)
    with open(log, "a") as f:
        f.write(line + "\n")
        f.flush()
        cmd = [str(Path(sys.executable).with_name("linearize")), *args]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            for out in proc.stdout:
                f.write(out)
                f.flush()
                if "Loading weights" not in out:
                    print(out, end="", flush=True)
    if proc.returncode:
        sys.exit(f"method_table: `linearize {' '.join(args)}` failed (exit {proc.returncode}); see {log}")


def run_row(name, work, results):
    from linearize.convert.export_native import ExportError, check_exportable

    out, bench = work / name, work / f"{name}-bench"
    log = work / f"{name}.log"
    work.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    job = ["--base", "llama", *ROWS[name], "--out", str(out), "--overwrite"]
    start = time.time()
    linearize(*job, log=log)
    job_seconds = time.time() - start
    contexts = ",".join(map(str, CONTEXTS))
    shutil.rmtree(bench, ignore_errors=True)
    bench_args = ["--teacher", "llama", "--contexts", contexts, "--decode-tokens", "16", "--repeats", "3"]
    linearize("bench", str(out), *bench_args, "--out", str(bench), log=log)
    config = json.loads((out / "config.json").read_text())
    try:
        exportable = f"yes ({check_exportable(config)} host)"
    except ExportError as err:
        exportable = f"no: {err}"
    speed = {
        entry["name"]: {str(s["context"]): s["decode_ms_per_token"] for s in entry["speed"]}
        for entry in json.loads((bench / "bench.json").read_text())
    }
    record = {
        "row": name,
        "command": "linearize " + " ".join(a if a != str(out) else f"/tmp/method-table/{name}" for a in job),
        "keep_attention": [i for i, m in enumerate(config["mixers"]) if not m],
        "quality": config["linearize"]["heldout_perplexity"],
        "job_seconds": round(job_seconds),
        "decode_ms_per_token": speed,
        "exportable": exportable,
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{name}: recorded in {results / f'{name}.json'}", flush=True)


def cells(r):
    """One table row's cells from a row's record."""
    q = r["quality"]
    ood = []
    for spec in ("corpus:gnu-manuals", "corpus:c-code"):
        windows = q["out_of_domain"][spec]["windows"]
        for n in ("256", "2048"):  # the main job's training length and 2048
            w = windows[n]
            worst = max(b["ratio"] for b in w["by_position"].values())
            ood.append(f"{w['ratio']:.2f} ({worst:.2f})")
    t, s = q["recall"]["teacher"], q["recall"]["student"]
    mqar = s["mqar"].get("16")
    speed = r["decode_ms_per_token"]
    student = next(k for k in speed if k != "llama")
    decode = " / ".join(
        f"{speed[student][n]:.0f} ({speed[student][n] / speed['llama'][n]:.2f}x)" for n in map(str, CONTEXTS)
    )
    return [
        r["row"],
        *ood,
        f"{s['passkey']['2048']:.2f} / {t['passkey']['2048']:.2f}",
        f"{s['niah_single']['2048']:.2f} / {t['niah_single']['2048']:.2f}",
        f"{mqar:.2f}" if mqar is not None else "",
        f"{q['cost']['state_bytes_4k'] / 2**20:.1f}",
        decode,
        f"{q['cost']['train_seconds']:.0f}",
        r["exportable"].split(":")[0],
    ]


HEADER = [
    "row",
    "gnu-manuals @256 (worst)",
    "gnu-manuals @2048 (worst)",
    "c-code @256 (worst)",
    "c-code @2048 (worst)",
    "passkey @2048 student / teacher",
    "NIAH @2048 student / teacher",
    "MQAR 16",
    "state @4k MiB",
    "decode ms/token @512 / @8192 (x teacher)",
    "training s",
    "native export",
]


def render(results):
    rows = [json.loads((results / f"{name}.json").read_text()) for name in ROWS if (results / f"{name}.json").exists()]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    lines += ["", "Commands:", ""]
    lines += [f"    {r['command']}   # {r['row']}, kept {','.join(map(str, r['keep_attention']))}" for r in rows]
    missing = [name for name in ROWS if not (results / f"{name}.json").exists()]
    if missing:
        lines += ["", f"Not yet run: {', '.join(missing)} (`python benchmarks/method_table.py --rows NAME`)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="", help=f"comma-separated, in order: {', '.join(ROWS)}")
    p.add_argument("--render", action="store_true", help="print the table of the recorded rows (table.md)")
    p.add_argument("--work", type=Path, default=Path("/tmp/method-table"))
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        p.error(f"unknown row {', '.join(unknown)}: choose from {', '.join(ROWS)}")
    if not names and not args.render:
        p.error("give --rows, --render or both")
    for name in names:
        run_row(name, args.work, args.results)
    if args.render:
        table = render(args.results)
        (args.results / "table.md").write_text(table)
        print(table)


if __name__ == "__main__":
    main()
