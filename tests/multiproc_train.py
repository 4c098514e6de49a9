"""Run by tests/test_multiprocess.py, one process or several under torchrun: train a stage on a tiny
model and fixed data, save the final weights and the samples each step used."""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from conftest import tiny_base  # noqa: E402

from linearize.convert.convert import convert  # noqa: E402
from linearize.distill.trainer import TrainConfig, train  # noqa: E402

stage, out, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
deepspeed = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "none" else None
teacher = tiny_base("llama")
student = convert(teacher, "lolcats", window=4)
blocks = torch.randint(3, 128, (64, 32), generator=torch.Generator().manual_seed(0))
cfg = TrainConfig(stage=stage, tokens=8 * 4 * 32, seq_len=32, batch_size=batch_size, lr=1e-2, deepspeed=deepspeed,
                  train="lora+new")
trained, summary, history = train(student, teacher, blocks, cfg, out, progress=False)
if int(os.environ.get("RANK", "0")) == 0:
    torch.save({k: v.detach().cpu() for k, v in trained.state_dict().items()}, os.path.join(out, "final.pt"))
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"samples_seen": summary["samples_seen"], "processes": summary["processes"],
                   "distributed": summary["distributed"],
                   "losses": [h["loss"] for h in history]}, f)
