"""Two processes (torchrun, gloo on CPU) train like one process with the same global batch, with DDP
(accelerate) and with DeepSpeed ZeRO-2 and ZeRO-3, and every sample is seen exactly once.

The one-process reference runs attention transfer whole; DDP and ZeRO-3 run it streamed (a layer at a
time), ZeRO-2 whole: matching the reference also proves the two forms train alike under each runner.
ZeRO-3 runs with every weight sharded (persistence threshold 0: the tiny model's weights are all below the
shipped config's threshold): no rank holds a whole weight of the student or the teacher while training (no
template copy, a sharded teacher), every rank gets the same trained weights back (DeepSpeed's consolidation),
and the teacher comes back whole and unchanged."""

import json
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(__file__)
SCRIPT = os.path.join(HERE, "multiproc_train.py")


CONFIGS = os.path.join(HERE, "..", "..", "distill", "configs")
ONE = {}
TRANSFER_MODE = {"ddp": "streamed", "zero2": "whole", "zero3": "streamed"}


def run(out, stage, processes, batch_size, port, deepspeed="none", transfer_mode="whole"):
    out.mkdir(exist_ok=True)
    args = [SCRIPT, stage, str(out), str(batch_size), deepspeed, transfer_mode]
    if processes == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_port",
            str(port),
            *args,
        ]
    try:  # a hang (e.g. a stale lock of DeepSpeed's JIT-built CPU comm op) fails the test instead of CI
        proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as err:
        tail = (err.stderr or b"").decode(errors="replace")[-3000:]
        raise AssertionError(f"{' '.join(cmd)} ran past 900 s:\n{tail}") from None
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = [json.loads((out / f"stats-rank{r}.json").read_text()) for r in range(processes)]
    finals = [torch.load(out / f"final-rank{r}.pt") for r in range(processes)]
    return finals, json.loads((out / "summary.json").read_text()), stats


def deepspeed_config(mode, tmp_path):
    path = os.path.join(CONFIGS, f"{mode}.json")
    if mode != "zero3":
        return path
    config = json.loads(open(path).read())
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # shard every weight of the tiny model
    (tmp_path / "zero3.json").write_text(json.dumps(config))
    return str(tmp_path / "zero3.json")


# Each runner once, each transfer form under a multi-process runner, ZeRO-3 (sharded teacher) in both stages:
# the two more pairs the full grid would add (DDP transfer, ZeRO-2 KD) cost CI 40 s and cover no other path.
@pytest.mark.parametrize(
    "mode,port,stage",
    [("ddp", 29611, "kd"), ("zero2", 29612, "transfer"), ("zero3", 29613, "transfer"), ("zero3", 29614, "kd")],
)
def test_two_processes_match_one(tmp_path_factory, stage, mode, port):
    if stage not in ONE:  # the one-process reference, global batch 4
        ONE[stage] = run(tmp_path_factory.mktemp("one"), stage, 1, 4, port)
    (one,), s1, _ = ONE[stage]
    ds = "none" if mode == "ddp" else deepspeed_config(mode, tmp_path_factory.mktemp("config"))
    finals, s2, stats = run(tmp_path_factory.mktemp(mode), stage, 2, 2, port, ds, TRANSFER_MODE[mode])
    assert s2["processes"] == 2
    assert s2["distributed"] == {"ddp": "MULTI_CPU", "zero2": "DEEPSPEED_ZERO2", "zero3": "DEEPSPEED_ZERO3"}[mode]
    assert sorted(s2["samples_seen"]) == sorted(s1["samples_seen"]) == list(range(32))  # each sample once
    for two in finals:  # rank 0's result, and every other rank's (the same weights)
        assert two.keys() == one.keys()
        assert max((one[k] - two[k]).abs().max().item() for k in one) <= 1e-5
    assert s2["losses"] == pytest.approx(s1["losses"], rel=1e-4)
    for s in stats:
        assert s["teacher_unchanged"] and s["teacher_plain"]  # the caller's teacher, as it was, after the stage
        if mode == "zero3":
            # Sharded student and teacher, no template: not one whole weight matrix on a rank while training.
            assert s["whole_weight_bytes"] == 0
        else:  # the measure sees whole models: the teacher (whole per rank) and the student
            assert s["whole_weight_bytes"] >= s["teacher"]


def test_deepspeed_gather_sends_from_the_rank_device(monkeypatch):
    """NCCL refuses CPU tensors (the H200 run failed so at the end of every stage): the seen-sample ids, kept on
    the CPU, must reach all_gather on the run's device. gloo (the tests above) takes either, so this checks the
    call itself, with the meta device standing in for CUDA."""
    from linearize.distill.runners import DeepSpeedRun

    run = object.__new__(DeepSpeedRun)  # only what gather reads
    run.device, run.num_processes = torch.device("meta"), 2
    sent = []

    def all_gather(out, t):
        sent.append(t.device)
        assert all(o.device == t.device for o in out)

    monkeypatch.setattr(torch.distributed, "all_gather", all_gather)
    gathered = run.gather(torch.arange(3))
    assert sent == [torch.device("meta")] and gathered.shape == (6,)
