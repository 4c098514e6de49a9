"""Teacher-forced recall with LoLA's sparse cache (issue 22): a cheap, relative measure between budgets and
selections on the same seeded prompts of the recall grid (depth x length, the out-of-domain haystacks). Each prompt
scores 1 when the argmax at every position of its answer, appended after a space, is the answer's next token (one
forward per prompt, no generation). The suite's own score, by greedy generation through the cache, is
``linearize eval DIR --suite recall --sparse-cache N``.

    python benchmarks/sparse_cache_probe.py /tmp/mj/default --budgets 0,64,256 --lengths 4096 --tasks passkey

Budget 0 is the student as trained. ``--select error`` swaps the layers' selection (LoLA's self-recall error) for
the ablation; the layers' own is ``attention``.
"""

import argparse
import json
import time

import torch

from linearize.convert.convert import set_sparse_cache
from linearize.convert.load import load_model
from linearize.evals.recall import Haystack, recall_samples
from linearize.kernels.window_attn.sparse import SELECTIONS
from linearize.pipeline import OOD_CORPORA, _haystack


def forced_scores(model, tokenizer, samples):
    """Teacher-forced recall, one forward per prompt: a prompt scores 1 when the argmax at every position of its
    (first) answer, appended after a space, is the answer's next token. Cheaper than greedy decoding (which may also
    put words before the value); a relative measure between budgets on the same prompts, not the suite's score."""
    cells, t0 = {}, time.time()
    for n, sample in enumerate(samples, 1):
        ids = tokenizer(sample["prompt"], return_tensors="pt")["input_ids"]
        full = tokenizer(sample["prompt"] + " " + sample["answers"][0], return_tensors="pt")["input_ids"]
        assert full[0, : ids.shape[1]].equal(ids[0]), "the answer must extend the prompt's tokens"
        with torch.no_grad():
            logits = model(full, use_cache=False).logits[0, ids.shape[1] - 1 : -1]
        right = bool(logits.argmax(-1).eq(full[0, ids.shape[1] :]).all())
        cell = cells.setdefault(f"{sample['task']}@{sample['length']}", {})
        cell.setdefault(sample["bucket"], []).append(int(right))
        if n % 10 == 0:
            print(f"  {n} prompts, {time.time() - t0:.0f} s", flush=True)
    return cells


def summary(cells):
    """'task@length score [by depth bucket]' per cell."""
    return "; ".join(
        f"{c} {sum(map(sum, b.values())) / sum(map(len, b.values())):.2f} "
        f"[{' '.join(f'{sum(x) / len(x):.1f}' for x in b.values())}]"
        for c, b in cells.items()
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--budgets", default="0,256")
    ap.add_argument("--lengths", default="2048,4096")
    ap.add_argument("--tasks", default="passkey,niah_single")
    ap.add_argument("--depths", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=10, help="per depth bucket")
    ap.add_argument("--out", help="JSON of every score")
    ap.add_argument("--select", default="attention", choices=SELECTIONS, help="the cache's score")
    ap.add_argument("--teacher", help="also score this base (e.g. llama) on the same prompts")
    args = ap.parse_args()
    model, tok, _ = load_model(args.model, dtype=torch.float32)
    model.eval()
    docs = _haystack(OOD_CORPORA, None)
    lengths = [int(n) for n in args.lengths.split(",")]
    tasks = args.tasks.split(",")
    results = {}
    if args.teacher:
        base, _, _ = load_model(args.teacher, dtype=torch.float32)
        samples = recall_samples(tok, Haystack(tok, docs), tasks, lengths, args.depths, args.prompts)
        results["teacher"] = cells = forced_scores(base.eval(), tok, samples)
        print(f"teacher (teacher-forced): {summary(cells)}", flush=True)
        del base
    for budget in (int(b) for b in args.budgets.split(",")):
        set_sparse_cache(model, budget, args.select)
        t0 = time.time()
        samples = recall_samples(tok, Haystack(tok, docs), tasks, lengths, args.depths, args.prompts)
        results[budget] = cells = forced_scores(model, tok, samples)
        print(f"budget {budget} (teacher-forced): {summary(cells)} ({time.time() - t0:.0f} s)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
