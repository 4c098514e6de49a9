"""Two processes (torchrun, gloo on CPU) train like one process with the same global batch, with DDP
(accelerate) and with DeepSpeed ZeRO-2 and ZeRO-3, and every sample is seen exactly once."""

import json
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(__file__)
SCRIPT = os.path.join(HERE, "multiproc_train.py")


CONFIGS = os.path.join(HERE, "..", "distill", "configs")
ONE = {}


def run(out, stage, processes, batch_size, port, deepspeed="none"):
    out.mkdir(exist_ok=True)
    if processes == 1:
        cmd = [sys.executable, SCRIPT, stage, str(out), str(batch_size), deepspeed]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_port", str(port), SCRIPT, stage, str(out), str(batch_size), deepspeed]
    proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out / "final.pt"), json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("stage", ["transfer", "kd"])
@pytest.mark.parametrize("mode,port", [("ddp", 29611), ("zero2", 29612), ("zero3", 29613)])
def test_two_processes_match_one(tmp_path_factory, stage, mode, port):
    if stage not in ONE:  # the one-process reference, global batch 4
        ONE[stage] = run(tmp_path_factory.mktemp("one"), stage, 1, 4, port)
    one, s1 = ONE[stage]
    ds = "none" if mode == "ddp" else os.path.join(CONFIGS, f"{mode}.json")
    two, s2 = run(tmp_path_factory.mktemp(mode), stage, 2, 2, port, ds)
    assert s2["processes"] == 2
    assert s2["distributed"] == {"ddp": "MULTI_CPU", "zero2": "DEEPSPEED_ZERO2", "zero3": "DEEPSPEED_ZERO3"}[mode]
    assert sorted(s2["samples_seen"]) == sorted(s1["samples_seen"]) == list(range(32))  # each sample once
    assert max((one[k] - two[k]).abs().max().item() for k in one) <= 1e-5
    assert s2["losses"] == pytest.approx(s1["losses"], rel=1e-4)
