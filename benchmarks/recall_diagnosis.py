"""Why the converted SmolLM2 loses retrieval (issue #22): two measurements that need no training.

``heads``: where the teacher's retrieval heads are. On retrieval probes (``convert.calibration.retrieval_probes``:
a code stated at a seeded depth of Python documentation, asked for at the end; apart from the evaluation's
prompts), each head's retrieval score is the attention that the position predicting the k-th answer token pays to the
k-th token of the stated value, averaged over answer tokens and probes (the copy attention of Wu et al., 2024,
"Retrieval Head Mechanistically Explains Long-Context Factuality"). The table lists the top heads and whether their
layer is among the kept softmax layers of the plan given.

``window``: the teacher with its converted layers cut down to what a converted layer's exact softmax part sees: the
plan's kept layers stay full softmax, every other layer becomes a LoLCATs layer whose window share is forced to 1
(``window_factor`` logit 30: the linear part has weight ~1e-13), i.e. softmax over the last ``--window`` tokens and
the 4 sinks, untrained. Recall (the main job's: passkey and single-key NIAH at 2048 tokens in gnu-manuals and
c-code, 20 prompts each) and the out-of-domain perplexity ratio at 2048 say how much of the teacher a converted
layer could keep if its linear part added nothing and took nothing away.

    python benchmarks/recall_diagnosis.py heads --kept 4,5,7,8,15,17,18,20,21,22,23,26
    python benchmarks/recall_diagnosis.py window --kept 4,5,7,8,15,17,18,20,21,22,23,26 --windows 64,128,256 --ppl
    python benchmarks/recall_diagnosis.py window --kept auto:18 --windows 128     # more layers kept (KL on probes)
    python benchmarks/recall_diagnosis.py trained /tmp/mj/w256s512                 # a main job's trained student

``trained CKPT``: a trained student (a main job's output) three ways, on the same recall prompts: as trained; with
its kept softmax layers' weights put back to the teacher's (KD's LoRA adapts q/k/v/o in every layer, the kept ones
too, on the training length's sequences: does that cost the kept layers their long-range retrieval?); and with its
linear part dropped (window share forced to 1 as in ``window``: what the trained linear part adds past the window).

(``--kept``: the main job's default plan for SmolLM2, ``auto:12 --rank-by kl-recall``.) Results:
``benchmarks/smollm2/recall-cpu/diagnosis.md``.
"""

import argparse
import copy
import time

import torch

from linearize.convert.bases import load_base, load_tokenizer
from linearize.convert.calibration import retrieval_probes
from linearize.convert.convert import convert
from linearize.convert.load import converted_config, load_model
from linearize.evals.perplexity import length_quality
from linearize.evals.recall import text_recall
from linearize.pipeline import OOD_CORPORA, RECALL, _haystack


def retrieval_scores(model, ids, answer):
    """[layers, heads] mean copy attention from each answer-predicting position to the value token it copies, and
    how many probes the model answers exactly (greedy)."""
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    score, correct = torch.zeros(layers, heads), 0
    for row, mask in zip(ids, answer):
        pos = mask.nonzero().flatten()
        target = row[pos + 1].tolist()
        tokens = row.tolist()
        start = next(i for i in range(len(tokens)) if tokens[i : i + len(target)] == target)  # the stated value
        with torch.no_grad():
            out = model(row[None], output_attentions=True)
        correct += out.logits[0, pos].argmax(-1).tolist() == target
        for layer, att in enumerate(out.attentions):
            copied = torch.stack([att[0, :, p, start + j] for j, p in enumerate(pos.tolist())])
            score[layer] += copied.mean(0).float() / len(ids)
    return score, correct


def heads(args):
    tok, model = load_tokenizer(args.base), load_base(args.base, dtype=torch.float32)
    model.set_attn_implementation("eager")  # attention weights are returned by the eager path only
    ids, answer = retrieval_probes(tok, num_samples=args.probes, seq_len=args.seq_len, seed=1)
    score, correct = retrieval_scores(model, ids, answer)
    kept = {int(i) for i in args.kept.split(",")} if args.kept else set()
    top = sorted(((score[layer, h].item(), layer, h) for layer in range(score.shape[0]) for h in range(score.shape[1])))
    top = top[::-1][: args.top]
    print(f"retrieval heads of {args.base}: {args.probes} probes of {args.seq_len} tokens, teacher exact on {correct}")
    share = score[sorted(kept)].sum() / score.sum()
    print(f"kept layers: {sorted(kept)}; share of all copy attention in them: {share:.3f}")
    print("\n| rank | layer | head | score | layer kept |\n|---|---|---|---|---|")
    for rank, (s, layer, h) in enumerate(top, 1):
        print(f"| {rank} | {layer} | {h} | {s:.3f} | {'yes' if layer in kept else 'no'} |")
    print("\nper-layer best head:", " ".join(f"{x:.2f}" for x in score.max(1).values.tolist()))


def recall_line(tok, lengths):
    """The main job's recall (passkey and single-key NIAH in its out-of-domain corpora), as one line per model."""
    docs = _haystack(OOD_CORPORA, None)
    tasks = RECALL["tasks"]

    def recall(model):
        r = text_recall(model, tok, tasks=tasks, lengths=lengths, depths=1, prompts=RECALL["prompts"], documents=docs)
        parts = []
        for n in lengths:
            cells = {t: r["scores"][t][str(n)] for t in tasks}
            kinds = ", ".join(
                f"{k} {round(v['score'] * v['n'])}/{v['n']}" for k, v in cells["niah_single"]["by_kind"].items()
            )
            parts.append(f"@{n} " + " ".join(f"{t} {c['score']:.2f}" for t, c in cells.items()) + f" ({kinds})")
        return "; ".join(parts)

    return recall


def window_only(model):
    """Force every converted layer's window share to sigmoid(30): its linear part drops out (weight ~1e-13)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(getattr(m, "window_factor", None), torch.nn.Parameter):
                m.window_factor.fill_(30.0)
    return model


def window(args):
    tok, base = load_tokenizer(args.base), load_base(args.base, dtype=torch.float32)
    recall = recall_line(tok, [int(n) for n in args.lengths.split(",")])
    if args.teacher:
        print(f"teacher: {recall(base)}", flush=True)
    for w in [int(x) for x in args.windows.split(",")]:
        start = time.time()
        model = convert(
            copy.deepcopy(base),
            "lolcats",
            keep_attention=args.kept,
            tokenizer=tok,
            decay=64,
            sinks=4,
            window=w,
            rank_by=args.rank_by,
        )
        kept = [i for i, m in enumerate(model.config.mixers) if not m]
        window_only(model).eval()
        line = f"window {w} + 4 sinks, kept {args.kept} = {','.join(map(str, kept))}: {recall(model)}"
        if args.ppl:
            for spec in OOD_CORPORA:
                win = length_quality(base, model, tok, spec, seq_lens=(2048,), max_tokens=8192)["windows"]["2048"]
                worst = max(b["ratio"] for b in win["by_position"].values())
                line += f"; {spec} ratio@2048 {win['ratio']:.3f} (worst bucket {worst:.3f})"
        print(line + f" [{time.time() - start:.0f}s]", flush=True)
        del model


def trained(args):
    tok, base = load_tokenizer(args.base), load_base(args.base, dtype=torch.float32)
    recall = recall_line(tok, [int(n) for n in args.lengths.split(",")])

    def student():
        return load_model(args.checkpoint, dtype=torch.float32)[0]

    def kept_teacher():
        model = student()
        with torch.no_grad():
            for i in kept:  # the kept layers' attention and MLP weights, as the teacher has them
                model.model.layers[i].load_state_dict(base.model.layers[i].state_dict())
        return model

    kept = [i for i, m in enumerate(converted_config(args.checkpoint)["mixers"]) if not m]  # config only
    print(f"{args.checkpoint}: kept layers {','.join(map(str, kept))}", flush=True)
    variants = {
        "as-trained": ("as trained", student),
        "kept-teacher": ("kept layers put back to the teacher's", kept_teacher),
        "window-only": ("linear part dropped (window only)", lambda: window_only(student())),
    }
    for name in args.variants.split(","):
        what, build = variants[name]
        print(f"{what}: {recall(build())}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("heads", "window", "trained"))
    p.add_argument("checkpoint", nargs="?", help="trained: a main job's output folder")
    p.add_argument("--base", default="llama")
    p.add_argument("--kept", default=None, help="the plan's kept softmax layers: comma-separated, or auto:N")
    p.add_argument("--rank-by", default="kl-recall", help="window: how an auto:N plan ranks layers")
    p.add_argument("--probes", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--windows", default="64,128,256")
    p.add_argument("--lengths", default="2048", help="window: recall prompt lengths")
    p.add_argument("--ppl", action="store_true", help="window: also the out-of-domain perplexity ratio at 2048")
    p.add_argument("--teacher", action="store_true", help="window: the teacher's recall on the same prompts first")
    p.add_argument(
        "--variants",
        default="as-trained,kept-teacher,window-only",
        help="trained: which of as-trained, kept-teacher, window-only, in this order",
    )
    args = p.parse_args()
    if args.what == "trained" and not args.checkpoint:
        p.error("trained needs the checkpoint folder")
    {"heads": heads, "window": window, "trained": trained}[args.what](args)


if __name__ == "__main__":
    main()
