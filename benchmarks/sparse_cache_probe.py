"""Does LoLA's sparse cache (``kernels/window_attn/sparse.py``) give a trained student its teacher's retrieval back?
(issue 22; training-free, as LoLA is.) A main job's student has each converted layer's window attention swapped for
the sparse-cache form, ``--budgets`` keys per key/value head; the recall grid's prompts (depth x length, the
out-of-domain haystacks) are then answered by greedy decoding that recomputes the whole prompt per token (the sparse
cache has no decode step yet, so nothing is read from a cache), the student only: the teacher's scores on the same
seeded prompts are in ``smollm2/recall-grid/window64-default.md``.

    python benchmarks/sparse_cache_probe.py /tmp/mj/default --budgets 0,256 --lengths 2048,4096

Budget 0 is the student as trained (the same outputs as its own kernels: tests/kernels/test_sparse_window.py).
"""

import argparse
import json
import time

import torch

import linearize.convert.linear_mixer as linear_mixer
from linearize.convert.load import load_model
from linearize.evals.recall import Haystack, recall_samples, text_recall
from linearize.kernels.window_attn.sparse import sparse_window_attn
from linearize.pipeline import OOD_CORPORA, _haystack

PLAIN = linear_mixer.window_attn  # the layers' own kernel, before any swap


def with_sparse_cache(model, budget, select="error"):
    """Route every converted layer's window attention through the sparse-cache form (a prefill from the start), or,
    with budget 0, back through the layers' own kernel."""
    groups = model.config.num_attention_heads // model.config.num_key_value_heads

    def window_attn(*args, mode="auto", past=None, initial_state=None, **kw):
        if past is not None or initial_state is not None:
            raise RuntimeError("the sparse-cache probe decodes without a cache")
        o, (state, _) = sparse_window_attn(*args, budget, **kw, groups=groups, select=select)
        return o, state

    linear_mixer.window_attn = window_attn if budget else PLAIN


def uncached_generate(model, tokenizer):
    calls = [0, time.time()]

    @torch.no_grad()
    def generate(prompt, max_new_tokens=8):
        calls[0] += 1
        if calls[0] % 10 == 0:
            print(f"  {calls[0]} prompts, {time.time() - calls[1]:.0f} s", flush=True)
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        start = ids.shape[1]
        for _ in range(max_new_tokens):
            nxt = model(ids, use_cache=False).logits[0, -1].argmax()
            if nxt.item() == tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, nxt.view(1, 1)], 1)
        return tokenizer.decode(ids[0, start:], skip_special_tokens=True)

    return generate


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
    ap.add_argument("--select", default="error", choices=["error", "attention"], help="the cache's score (sparse.py)")
    ap.add_argument("--forced", action="store_true", help="teacher-forced answers (forced_scores), not generation")
    ap.add_argument("--teacher", help="with --forced: also score this base (e.g. llama) on the same prompts")
    args = ap.parse_args()
    model, tok, _ = load_model(args.model, dtype=torch.float32)
    model.eval()
    docs = _haystack(OOD_CORPORA, None)
    lengths = [int(n) for n in args.lengths.split(",")]
    tasks = args.tasks.split(",")
    results = {}
    if args.teacher and args.forced:
        base, _, _ = load_model(args.teacher, dtype=torch.float32)
        samples = recall_samples(tok, Haystack(tok, docs), tasks, lengths, args.depths, args.prompts)
        results["teacher"] = cells = forced_scores(base.eval(), tok, samples)
        print(f"teacher (teacher-forced): {summary(cells)}", flush=True)
        del base
    for budget in (int(b) for b in args.budgets.split(",")):
        with_sparse_cache(model, budget, args.select)
        t0 = time.time()
        if args.forced:
            samples = recall_samples(tok, Haystack(tok, docs), tasks, lengths, args.depths, args.prompts)
            cells = forced_scores(model, tok, samples)
            results[budget] = cells
            print(f"budget {budget} (teacher-forced): {summary(cells)} ({time.time() - t0:.0f} s)", flush=True)
            continue
        r = text_recall(
            model,
            tok,
            tasks=tasks,
            lengths=lengths,
            depths=args.depths,
            prompts=args.prompts,
            documents=docs,
            generate=uncached_generate(model, tok),
        )
        results[budget] = r["scores"]
        cells = []
        for n in lengths:
            for t in tasks:
                c = r["scores"][t][str(n)]
                by = " ".join(f"{b['score']:.1f}" for b in c.get("by_depth", {}).values())
                cells.append(f"{t}@{n} {c['score']:.2f} [{by}]")
        print(f"budget {budget}: " + "; ".join(cells) + f" ({time.time() - t0:.0f} s)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
