"""Two processes (torchrun, gloo on CPU) train exactly like one process with the same global batch,
and every sample is seen once."""

import json
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(__file__)
SCRIPT = os.path.join(HERE, "multiproc_train.py")


def run(out, stage, processes, batch_size, port):
    out.mkdir()
    if processes == 1:
        cmd = [sys.executable, SCRIPT, stage, str(out), str(batch_size)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_port", str(port), SCRIPT, stage, str(out), str(batch_size)]
    subprocess.run(cmd, check=True, cwd=HERE, capture_output=True)
    return torch.load(out / "final.pt"), json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("stage,port", [("transfer", 29611), ("kd", 29612)])
def test_two_process_ddp_matches_one_process(tmp_path, stage, port):
    one, s1 = run(tmp_path / "one", stage, 1, 4, port)
    two, s2 = run(tmp_path / "two", stage, 2, 2, port)
    assert s2["processes"] == 2 and s2["distributed"] == "MULTI_CPU"
    assert sorted(s2["samples_seen"]) == sorted(s1["samples_seen"]) == list(range(32))  # each sample once
    assert max((one[k] - two[k]).abs().max().item() for k in one) <= 1e-5
    assert s2["losses"] == pytest.approx(s1["losses"], rel=1e-4)
