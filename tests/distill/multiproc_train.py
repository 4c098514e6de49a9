"""Run by tests/distill/test_multiprocess.py, one process or several under torchrun: train a stage on a tiny
model and fixed data, save the final weights and the samples each step used.

Every rank writes its trained weights (final-rank<R>.pt) and what it held (stats-rank<R>.json): the bytes of
whole weight matrices alive at the first step (every float tensor shaped like one of the student's or the
teacher's weights, found through gc, each storage once), the bytes of the student's and the teacher's
parameters, and whether the teacher came back whole, plain and unchanged."""

import gc
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from linearize.convert.convert import convert  # noqa: E402
from linearize.distill.config import TrainConfig  # noqa: E402
from linearize.distill.runners import AccelerateRun, DeepSpeedRun  # noqa: E402
from linearize.distill.trainer import train  # noqa: E402

from helpers import tiny_base  # noqa: E402

stage, out, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
deepspeed = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "none" else None
transfer_mode = sys.argv[5] if len(sys.argv) > 5 else "whole"
rank = int(os.environ.get("RANK", "0"))
teacher = tiny_base("llama")
student = convert(teacher, "lolcats", window=4)
original_teacher = {k: v.clone() for k, v in teacher.state_dict().items()}
param_bytes = {
    name: sum(p.numel() * p.element_size() for p in model.parameters())
    for name, model in (("student", student), ("teacher", teacher))
}
blocks = torch.randint(3, 128, (64, 32), generator=torch.Generator().manual_seed(0))
cfg = TrainConfig(
    stage=stage,
    tokens=8 * 4 * 32,
    seq_len=32,
    batch_size=batch_size,
    lr=1e-2,
    deepspeed=deepspeed,
    train="lora+new",
    transfer_mode=transfer_mode,
)


WEIGHT_SHAPES = {tuple(p.shape) for model in (student, teacher) for p in model.parameters() if p.dim() >= 2}


def whole_weight_bytes(exclude):
    """Bytes of the storages of every float tensor reachable by gc shaped like a weight matrix of the models
    (a whole weight: ZeRO-3's shards are flat), less ``exclude``'s."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen = {}
    for obj in gc.get_objects():
        if (
            isinstance(obj, torch.Tensor)
            and obj.is_floating_point()
            and not obj.is_meta
            and tuple(obj.shape) in WEIGHT_SHAPES
            and obj.untyped_storage().data_ptr() not in skip
        ):
            seen[obj.untyped_storage().data_ptr()] = obj.untyped_storage().nbytes()
    return sum(seen.values())


held = {}
for runner in (DeepSpeedRun, AccelerateRun):

    def step(self, ids, _step=runner.step):
        if "whole_weight_bytes" not in held:  # at the first step: the models as training holds them
            gc.collect()
            held["whole_weight_bytes"] = whole_weight_bytes(exclude=original_teacher.values())
        return _step(self, ids)

    runner.step = step

trained, summary, history = train(student, teacher, blocks, cfg, out, progress=False)
torch.save({k: v.detach().cpu() for k, v in trained.state_dict().items()}, os.path.join(out, f"final-rank{rank}.pt"))
teacher_back = teacher.state_dict()
with open(os.path.join(out, f"stats-rank{rank}.json"), "w") as f:
    json.dump(
        {
            **held,
            **param_bytes,
            "teacher_unchanged": teacher_back.keys() == original_teacher.keys()
            and all(torch.equal(teacher_back[k].cpu(), v) for k, v in original_teacher.items()),
            "teacher_plain": not any(hasattr(p, "ds_id") for p in teacher.parameters()),
        },
        f,
    )
if rank == 0:
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(
            {
                "samples_seen": summary["samples_seen"],
                "processes": summary["processes"],
                "distributed": summary["distributed"],
                "losses": [h["loss"] for h in history],
            },
            f,
        )
