"""Quality at length: which lever makes a distilled student hold the teacher's quality past its training
length and keep recall. Each config is the main job (convert -> transfer -> KD) at one token budget,
measured as QUALITY.md asks: out-of-domain corpora over 512- and 2048-token windows, per position,
passkey at 2048 and MQAR, teacher and student on the same windows in the same run, with the cost
(training tokens and seconds, state bytes at 4k) beside it.

    python benchmarks/length_ablation.py --out DIR [--configs a,b,...] [--workers N]
    python benchmarks/length_ablation.py --out DIR --table          # the markdown table of DIR/*.json

Each config writes DIR/NAME.json (runs already there are skipped, so an interrupted sweep resumes).
--workers runs configs in parallel subprocesses (for a GPU, where one run leaves it mostly idle).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BUDGET = dict(tokens=90_000, seq_len=256)  # the main job's CPU budget on main before this study
LENGTHS = (512, 2048)
# Levers are chosen on jargon (informal prose) only; gnu-manuals and c-code are the reported corpora.
CORPORA = ("corpus:jargon", "corpus:gnu-manuals", "corpus:c-code")


def lolcats(decay=None, sinks=None, keep=None, rank_by="kl", window=None, **extra):
    """main_job arguments for a LoLCATs config: decay span, sinks, an auto:N plan ranked by ``rank_by``, the
    softmax window (LoLCATs' 64 unless given)."""
    settings = {k: v for k, v in (("decay", decay), ("sinks", sinks), ("window", window)) if v}
    if keep and keep.startswith("auto:"):
        settings["rank_by"] = rank_by
    return dict(target="lolcats", convert_settings=settings, **({"keep_attention": keep} if keep else {}), **extra)


# name -> (what it tests, main_job keyword arguments)
LEVERS = {
    "lolcats": ("main's default: LoLCATs on every layer", lolcats()),
    "lolcats-decay256": ("+ learned per-head decay, spans 32-256", lolcats(256)),
    "lolcats-decay64": ("+ learned per-head decay, spans 8-64", lolcats(64)),
    "lolcats-seq512": ("+ 512-token training sequences", lolcats(seq_len=512)),
    "lolcats-keep4kl": ("+ 4 softmax layers ranked by KL", lolcats(keep="auto:4")),
    "lolcats-decay256-keep4kl": ("+ decay 256 + 4 softmax layers ranked by KL", lolcats(256, keep="auto:4")),
    "lolcats-decay256-keep4rec": (
        "+ decay 256 + 4 softmax layers ranked by recency",
        lolcats(256, keep="auto:4", rank_by="recency"),
    ),
    "lolcats-decay256-keep8even": ("+ decay 256 + 8 softmax layers spread evenly (0.25)", lolcats(256, keep="0.25")),
    "lolcats-decay256-keep8kl": ("+ decay 256 + 8 softmax layers ranked by KL", lolcats(256, keep="auto:8")),
    "lolcats-decay64-keep4kl": ("+ decay 64 + 4 softmax layers ranked by KL", lolcats(64, keep="auto:4")),
}
# Second round, after the first showed KL ranking and short decays win and passkey stays at 0 everywhere.
ROUND2 = {
    "lolcats-sinks4": ("+ 4 attention sinks", lolcats(sinks=4)),
    "lolcats-decay64-sinks4": ("+ decay 64 + 4 sinks", lolcats(64, 4)),
    "lolcats-decay64-keep8kl": ("+ decay 64 + 8 softmax layers ranked by KL", lolcats(64, None, "auto:8")),
    "lolcats-decay64-sinks4-keep4kl": ("+ decay 64 + 4 sinks + 4 softmax layers (KL)", lolcats(64, 4, "auto:4")),
    "lolcats-decay64-sinks4-keep8kl": ("+ decay 64 + 4 sinks + 8 softmax layers (KL)", lolcats(64, 4, "auto:8")),
    "lolcats-decay256-sinks4-keep8kl": ("+ decay 256 + 4 sinks + 8 softmax layers (KL)", lolcats(256, 4, "auto:8")),
    "lolcats-decay64-sinks4-keep8kl-180k": ("the same, 180k tokens", lolcats(64, 4, "auto:8", tokens=180_000)),
    "lolcats-decay64-sinks4-keep8kl-360k": ("the same, 360k tokens", lolcats(64, 4, "auto:8", tokens=360_000)),
}
LEVERS.update(ROUND2)
# Recall at length (issue 22): the main job's default recipe at its CPU budget, then which layers stay softmax,
# ranked on retrieval probes (--rank-by kl-recall) or on probes and prose together (kl-mix).
MAIN = dict(tokens=120_000)
RECALL_LEVERS = {
    "recall-default": (
        "the main job's default: decay 64, 4 sinks, 8 layers (KL on prose)",
        lolcats(64, 4, "auto:8", **MAIN),
    ),
    "recall-klmix": (
        "8 layers ranked by KL on prose and on retrieval probes",
        lolcats(64, 4, "auto:8", "kl-mix", **MAIN),
    ),
    "recall-klrecall": ("8 layers ranked by KL on retrieval probes", lolcats(64, 4, "auto:8", "kl-recall", **MAIN)),
    # More attention kept, ranked on the probes: what retrieval costs in KV share (12 of 30 layers: 40% of the KV).
    "recall-klrecall-keep12": (
        "12 layers ranked by KL on retrieval probes",
        lolcats(64, 4, "auto:12", "kl-recall", **MAIN),
    ),
    "recall-klmix-keep12": ("12 layers ranked by KL on prose and probes", lolcats(64, 4, "auto:12", "kl-mix", **MAIN)),
    # Distillation data that asks for retrieval: half the KD blocks carry three facts and end by asking for them.
    "recall-keep12-exercises50": (
        "12 layers (KL on probes) + half the KD blocks retrieval exercises",
        lolcats(64, 4, "auto:12", "kl-recall", **MAIN, stage_overrides={"kd": {"retrieval_share": 0.5}}),
    ),
    # A wider window in the converted layers: the untrained window-only probe (recall_diagnosis.py window) kept NIAH
    # and perplexity far better with 128 or 256 tokens than with 64.
    "recall-keep12-window128": (
        "12 layers (KL on probes), window 128",
        lolcats(64, 4, "auto:12", "kl-recall", window=128, **MAIN),
    ),
}
LEVERS.update(RECALL_LEVERS)
# Every target, all layers converted, at the same budget (targets' own defaults), plus one hybrid.
TARGETS = {
    f"all-{t}": (f"{t} on every layer", dict(target=t))
    for t in ("linear", "hedgehog", "t2r", "lolcats", "supra", "mamba", "gla", "gdn")
}
TARGETS["all-recurformer"] = (
    "recurformer, the most local half of all heads",
    dict(target="recurformer", convert_settings={"recency_fraction": 0.5}),
)
CONFIGS = {**LEVERS, **TARGETS}


def run_one(name, out, tokens, eval_tokens):
    import torch

    from linearize.pipeline import main_job

    what, kwargs = CONFIGS[name]
    kwargs = {**BUDGET, **kwargs}
    seq_len = kwargs.pop("seq_len")
    overrides = {}
    if torch.cuda.is_available():
        # Mirror the CPU run: fp32 and the CPU stage settings (the GPU defaults are a different recipe).
        from linearize.distill.recipe import CPU, GPU
        from linearize.distill.trainer import TrainConfig

        plain = TrainConfig()
        overrides = {
            stage: {**{k: getattr(plain, k) for k in GPU[stage]}, **CPU[stage], "mixed_precision": "no"}
            for stage in CPU
        }
        for stage in overrides:
            overrides[stage].pop("tokens"), overrides[stage].pop("seq_len")
    for stage, settings in kwargs.pop("stage_overrides", {}).items():
        overrides[stage] = {**overrides.get(stage, {}), **settings}
    t0 = time.time()
    result = main_job(
        "llama",
        kwargs.pop("target"),
        Path(out) / f"model-{name}",
        seq_len=seq_len,
        tokens=tokens or kwargs.pop("tokens"),
        eval_lengths=LENGTHS,
        eval_tokens=eval_tokens,
        eval_corpora=CORPORA,
        stage_overrides=overrides,
        log=lambda m: print(f"[{name}] {m}", file=sys.stderr, flush=True),
        **{k: v for k, v in kwargs.items() if k != "tokens"},
    )
    q = result["quality"]
    q["wall_seconds"] = round(time.time() - t0, 1)
    q["config"] = {"name": name, "what": what, **CONFIGS[name][1], "seq_len": seq_len}
    q["device"] = "cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}"
    config = json.loads((Path(out) / f"model-{name}" / "config.json").read_text())
    q["kept_attention"] = config["linearize"]["keep_attention"]
    q["mixer"] = next((m for m in config["mixers"] if m), None)
    (Path(out) / f"{name}.json").write_text(json.dumps(q, indent=1))
    import shutil

    shutil.rmtree(Path(out) / f"model-{name}", ignore_errors=True)


def table(out):
    rows = []
    for path in sorted(Path(out).glob("*.json")):
        q = json.loads(path.read_text())
        c, cost = q["config"], q["cost"]
        cells = []
        for spec, res in q["out_of_domain"].items():
            for n in map(str, LENGTHS):
                w = res["windows"][n]
                worst = max(b["ratio"] for b in w["by_position"].values())
                cells.append(f"{w['ratio']:.2f} ({worst:.2f})")
        t, s = q["recall"]["teacher"], q["recall"]["student"]
        niah = f"{s['niah_single']['2048']:.2f} / {t['niah_single']['2048']:.2f}" if "niah_single" in s else ""
        rows.append(
            f"| {c['name']} | {c['what']} | "
            + " | ".join(cells)
            + f" | {s['passkey']['2048']:.2f} / {t['passkey']['2048']:.2f} | {niah} | {s['mqar']['16']:.2f} / "
            f"{t['mqar']['16']:.2f} | {cost['train_tokens']:,} | {cost['train_seconds']:.0f} | "
            f"{cost['state_bytes_4k'] / 2**20:.1f} | {q['device']} |"
        )
    corpora = list(json.loads(next(Path(out).glob("*.json")).read_text())["out_of_domain"])
    head = " | ".join(f"{c} @{n}" for c in corpora for n in LENGTHS)
    return (
        "\n".join(
            [
                "Student/teacher perplexity ratio on out-of-domain text (worst position bucket in brackets); passkey, "
                "single-key NIAH (in ordinary text where the run has it: configs measured before it hold the "
                "passkey in a repeated filler sentence) and MQAR student / teacher; cost.",
                "",
                f"| config | what | {head} | passkey@2048 | NIAH@2048 | MQAR 16 | train tokens | train s | "
                "state MiB @4k | device |",
                "|---|---|" + "---|" * (len(corpora) * len(LENGTHS) + 7),
                *rows,
            ]
        )
        + "\n"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument(
        "--configs", default=",".join(LEVERS), help=f"comma list, 'targets', or 'all' ({', '.join(CONFIGS)})"
    )
    p.add_argument("--tokens", type=int, default=None, help="override the budget (both stages)")
    p.add_argument("--eval-tokens", type=int, default=8192)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)  # one config, in this process
    p.add_argument("--table", action="store_true")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.table:
        text = table(args.out)
        (Path(args.out) / "table.md").write_text(text)
        print(text)
        return
    if args.run:
        return run_one(args.run, args.out, args.tokens, args.eval_tokens)
    names = {"all": list(CONFIGS), "targets": list(TARGETS), "levers": list(LEVERS)}.get(args.configs)
    if args.configs == "round2":
        names = [*ROUND2, "all-gdn"]
    names = names or [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"unknown config {unknown[0]!r}: choose from {', '.join(CONFIGS)}")
    todo = [n for n in names if not (Path(args.out) / f"{n}.json").exists()]
    if todo:  # fill the base's cache once, so parallel runs do not race to write it
        from linearize.convert.bases import load_base

        load_base("llama")
    running = []
    while todo or running:
        while todo and len(running) < args.workers:
            name = todo.pop(0)
            cmd = [sys.executable, __file__, "--out", args.out, "--run", name, "--eval-tokens", str(args.eval_tokens)]
            cmd += ["--tokens", str(args.tokens)] if args.tokens else []
            log = open(Path(args.out) / f"{name}.log", "w")
            running.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(2)
        for item in list(running):
            name, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(
                    f"{name}: {'done' if proc.returncode == 0 else f'FAILED ({proc.returncode}), see {name}.log'}",
                    flush=True,
                )
    print(table(args.out))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
