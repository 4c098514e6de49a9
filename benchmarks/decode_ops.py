"""Ops one layer's attention dispatches in a decode step, teacher against the students of decode_vs_teacher.py: on CPU
a decode step's time is mostly its count of ops (views included), so this is the count the decode work reduces.
Counted with a TorchDispatchMode around the attention module of one layer (a converted one) during one step at the
given context; ops that run inside an op (a matmul's reshapes) count too.

    python benchmarks/decode_ops.py --context 512
"""

import argparse
import collections

from decode_vs_teacher import STUDENTS
from torch.utils._python_dispatch import TorchDispatchMode

from linearize.api import convert
from linearize.convert.bases import load_base
from linearize.evals.bench import decode, prefill


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket).replace("aten.", "")] += 1
        return func(*args, **(kwargs or {}))


def count_step(model, layer, context):
    """{op: count} of ``model.model.layers[layer].self_attn`` over one decode step after ``context`` tokens."""
    cache, token, _ = prefill(model, context)
    _, token = decode(model, cache, token, 2)  # past the first steps' one-off work
    attention = model.model.layers[layer].self_attn
    mode = Count()

    def enter(*_):
        mode.__enter__()  # a pre-hook that returns something replaces the module's inputs

    def leave(*_):
        mode.__exit__(None, None, None)

    hooks = [attention.register_forward_pre_hook(enter), attention.register_forward_hook(leave)]
    try:
        decode(model, cache, token, 1)
    finally:
        for hook in hooks:
            hook.remove()
    return mode.ops


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="llama")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--layer", type=int, default=None, help="a layer every student converts (default: the first)")
    args = ap.parse_args()
    teacher = load_base(args.base, dtype="float32").eval()
    students = {}
    for name, settings in STUDENTS.items():
        settings = dict(settings)
        students[name] = convert(teacher, settings.pop("target"), **settings).eval()
    converted = set.intersection(*(set(s.mixers()) for s in students.values()))
    layer = min(converted) if args.layer is None else args.layer
    if layer not in converted:
        raise SystemExit(f"layer {layer} keeps softmax attention in a student: pick one of {sorted(converted)}")
    counts = {"teacher": count_step(teacher, layer, args.context)}
    counts.update({name: count_step(student, layer, args.context) for name, student in students.items()})
    print(
        f"ops dispatched by layer {layer}'s attention in one decode step at {args.context} tokens "
        f"({args.base}, float32)\n"
    )
    print("| model | ops | views (view, reshape, slice, select, transpose, t, expand, unsqueeze) |")
    print("|---|---|---|")
    view_ops = {"view", "_unsafe_view", "reshape", "slice", "select", "transpose", "t", "expand", "unsqueeze"}
    for name, ops in counts.items():
        print(f"| {name} | {sum(ops.values())} | {sum(n for op, n in ops.items() if op in view_ops)} |")
    for name, ops in counts.items():
        print(f"\n{name}: " + ", ".join(f"{op} {n}" for op, n in ops.most_common()))


if __name__ == "__main__":
    main()
