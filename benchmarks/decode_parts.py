"""Where one layer's decode step spends its time, teacher against the all-LoLCATs student: each piece of the step
(the student's mixer methods and kernel, the teacher's projections, rotary, KV-cache update and SDPA) wrapped in a
timer while both models decode in alternating rounds, reported in microseconds per layer per token. A wrapper adds
about a microsecond a call, so small pieces read high; on CPU the weights stream through the caches every token,
and the step's Python runs cold as well, which hot microbenchmarks miss.

    python benchmarks/decode_parts.py --context 512
"""

import argparse
import functools
import sys
import time

import torch
import transformers.models.llama.modeling_llama as llama
from transformers.cache_utils import DynamicLayer

import linearize.api  # noqa: F401  (imports the modules below)
from linearize.api import convert
from linearize.convert.bases import load_base
from linearize.evals.bench import decode, prefill

mixers = sys.modules["linearize.convert.linear_mixer"]  # linearize.convert is also the name of a function
mixer_base = sys.modules["linearize.convert.mixer_base"]
SPENT = {}


def timed(key, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        SPENT[key] = SPENT.get(key, 0.0) + time.perf_counter() - t0
        return out

    return wrapper


def instrument(teacher):
    for name in ("forward", "window_step", "step_qkv", "step_features", "project_o"):
        owner = mixer_base.Mixer if name in mixer_base.Mixer.__dict__ else mixers.LinearAttentionMixer
        setattr(owner, name, timed(f"student {name}", getattr(owner, name)))
    for name in ("get_state", "kept_for_steps", "update_window", "with_ones", "window_attn_step"):
        setattr(mixers, name, timed(f"student {name}", getattr(mixers, name)))
    llama.LlamaAttention.forward = timed("teacher forward", llama.LlamaAttention.forward)
    llama.apply_rotary_pos_emb = timed("teacher rotary", llama.apply_rotary_pos_emb)
    llama.ALL_ATTENTION_FUNCTIONS["sdpa"] = timed("teacher sdpa", llama.ALL_ATTENTION_FUNCTIONS["sdpa"])
    DynamicLayer.update = timed("teacher kv cache update", DynamicLayer.update)
    for layer in teacher.model.layers:  # the teacher's own modules (the student's are copies, projected by mm)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            module = getattr(layer.self_attn, proj)
            module.forward = timed(f"teacher {proj}", module.forward)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="llama")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=8, help="decode steps per round")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    teacher = load_base(args.base, dtype="float32").eval()
    student = convert(teacher, "lolcats").eval()
    instrument(teacher)  # after the conversion: a copied module would carry the teacher's wrapped forward
    runs = {}
    for name, model in (("teacher", teacher), ("student", student)):
        cache, token, _ = prefill(model, args.context)
        _, token = decode(model, cache, token, 2)
        runs[name] = [model, cache, token]
    SPENT.clear()
    for r in range(args.rounds):
        for name in ("teacher", "student") if r % 2 else ("student", "teacher"):
            run = runs[name]
            _, run[2] = decode(run[0], run[1], run[2], args.tokens)
            if name == "teacher":
                run[1].crop(args.context + 2 - run[1].get_seq_length())
    layers = teacher.config.num_hidden_layers
    print(
        f"us per layer per token at {args.context} tokens ({args.base}, float32, torch threads "
        f"{torch.get_num_threads()}, {args.rounds} alternating rounds of {args.tokens} steps)\n"
    )
    print("| piece | us |\n|---|---|")
    for key in sorted(SPENT):
        print(f"| {key} | {SPENT[key] / (args.rounds * args.tokens) / layers * 1e6:.1f} |")


if __name__ == "__main__":
    main()
