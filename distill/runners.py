"""Runners: what carries the training loop's calls to a distributed backend, behind one small interface
(``Runner``): accelerate for one process or DDP (``AccelerateRun``), the DeepSpeed engine for ZeRO-2/3
(``DeepSpeedRun``). Both are made with the same arguments: (objective, optimizer, LR schedule, dataset,
TrainConfig, whether on CUDA, the output folder, the student's compute dtype).

DeepSpeed (``DeepSpeedRun``). ZeRO-2 shards the optimizer state and gradients; every rank holds the whole
student and the whole teacher, both in the run's dtype. ZeRO-3 also shards the student's weights, and then
the teacher's too: the teacher goes through an inference-only ZeRO-3 engine (``deepspeed.initialize`` with no
optimizer: DeepSpeed's ``DeepSpeedZeRoOffload``), each rank keeping 1/N of its weights in the run's dtype and
gathering each module's weights only around its forward, as the student's are. Why sharded rather than a
whole copy per rank: ZeRO-3 is what one runs when a student does not fit a rank whole, and the teacher is
the same model, so a whole teacher per rank would cost as much as the student ZeRO-3 just sharded (an 8B
bf16 teacher is 16 GB per GPU, a 70B one does not fit an 80 GB GPU at all); the price is gathering the
teacher's weights in each forward, the traffic the student's forward already has. Under ZeRO-2 the gathers
would buy nothing, so the teacher stays whole per rank. At the end of a ZeRO-3 stage the trained weights
are consolidated by DeepSpeed (``engine._zero3_consolidated_16bit_state_dict()``, what ``save_16bit_model``
writes: the module's weights in the run's dtype, gathered a layer at a time to rank 0), sent from rank 0 to
the others a tensor at a time, and put into a skeleton of the student made before training with its
tensors on the meta device (no memory): no rank ever holds a second whole copy of the student during
training. The 16-bit consolidation, not ``zero_to_fp32``'s fp32 masters: the trained model comes back in the
run's dtype anyway, and the module's weights are exactly the masters rounded to it (in an fp32 run, the
masters themselves).
"""

import copy
import itertools
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from linearize.distill.deepspeed_config import deepspeed_config, teacher_deepspeed_config
from linearize.distill.precision import compute_dtype
from linearize.distill.stages import unwrap_peft


class Runner(Protocol):
    """What the training loop (``trainer.train``) and ``checkpoints.save_checkpoint`` ask of a runner. A runner
    is made from the objective, the optimizer, the LR schedule, the dataset of (block, index) pairs and the
    config, and owns them from then on: it moves the models to its device, wraps or shards them, steps the
    optimizer and the schedule."""

    num_processes: int  # processes in the run (the world size)
    is_main_process: bool  # rank 0: the one that writes shared files
    is_local_main_process: bool  # the first process on this machine: the one that shows progress
    distributed_type: str  # the backend, for the summary: NO, MULTI_GPU, MULTI_CPU, DEEPSPEED_ZERO2, ...

    def batches(self, skip: int) -> Iterable:
        """This process's micro-batches of (block ids, block indices), the first ``skip`` left out (those a
        resumed run already trained on)."""

    def step(self, ids: torch.Tensor) -> tuple[torch.Tensor, dict, bool]:
        """Forward and backward of one micro-batch; at a gradient accumulation boundary also clip the gradients
        to ``max_grad_norm``, step the optimizer and the LR schedule and zero the gradients. Returns (this
        process's loss, its per-layer losses (may be empty), whether an optimizer step was taken)."""

    def lr(self) -> float:
        """The learning rate of the last optimizer step."""

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the processes (every process takes part)."""

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (a 1-d tensor) from every process, concatenated in the order the processes were dealt samples."""

    def log(self, values: dict, step: int) -> None:
        """Write scalar ``values`` for optimizer step ``step`` to the run's TensorBoard logs (main process)."""

    def save(self, path: Path) -> None:
        """Write the training state (weights, optimizer, LR schedule, random states) into the folder ``path``
        (every process takes part)."""

    def load(self, path: Path) -> None:
        """Read back what ``save`` wrote into ``path``."""

    def barrier(self) -> None:
        """Wait until every process reaches this call."""

    def end(self) -> None:
        """Close the logs and hand the models back from the backend's wrapping (every process takes part)."""

    def trained(self) -> nn.Module:
        """The trained student (peft-wrapped where the stage trains LoRA), whole on this process; after ``end``."""


def copy_with_parameters(module, tensor_of):
    """A deep copy of ``module`` whose parameters are new Parameters holding ``tensor_of(parameter)`` (same
    requires_grad; a tied parameter stays one). Buffers (the rotary frequencies: small, never sharded by ZeRO)
    are copied."""
    memo = {id(p): nn.Parameter(tensor_of(p), requires_grad=p.requires_grad) for p in module.parameters()}
    return copy.deepcopy(module, memo)


def meta_skeleton(module):
    """``module``'s modules, names, shapes, dtypes and ties with its parameters on the meta device: no memory."""
    return copy_with_parameters(module, lambda p: torch.empty_like(p, device="meta"))


def broadcast_state(state, device):
    """Rank 0's ``state`` (a state dict; None on the other ranks) on every rank, sent a tensor at a time as
    bytes (so any dtype goes over gloo and NCCL, through ``device``), tensors that alias on rank 0 (tied
    weights) aliasing on every rank. Rank 0 keeps its own tensors."""
    dist = torch.distributed
    rank = dist.get_rank()
    if dist.get_world_size() == 1:
        return state
    header = [None]
    if rank == 0:
        first = {}
        header[0] = [(key, first.setdefault(id(t), key), tuple(t.shape), t.dtype) for key, t in state.items()]
    dist.broadcast_object_list(header, src=0, device=device)
    out = {}
    for key, source, shape, dtype in header[0]:
        if source != key:
            out[key] = out[source]
            continue
        if rank == 0:
            data = state[key].contiguous().reshape(-1).view(torch.uint8).to(device)
        else:
            data = torch.empty(math.prod(shape) * dtype.itemsize, dtype=torch.uint8, device=device)
        dist.broadcast(data, 0)
        out[key] = state[key] if rank == 0 else data.cpu().view(dtype).reshape(shape)
    return out


class DeepSpeedRun:
    """The DeepSpeed engine behind the ``Runner`` calls, used for every --deepspeed run. (accelerate's DeepSpeed
    integration is off on CPU and does not hand DeepSpeed the rank and world size there; the engine itself runs
    ZeRO-2/3 over gloo on CPU under torchrun, and over NCCL on GPUs, so one path serves both and CPU tests prove
    it.) The engine steps the LR schedule and saves it in its checkpoints."""

    def __init__(self, objective, optimizer, scheduler, dataset, cfg, cuda, out, dtype=torch.float32):
        import deepspeed
        from torch.utils.tensorboard import SummaryWriter

        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
        self.rank, self.num_processes = torch.distributed.get_rank(), torch.distributed.get_world_size()
        config = deepspeed_config(cfg, dtype)
        self.zero3 = config["zero_optimization"].get("stage") == 3
        # ZeRO-3 partitions the student in place; the trained weights come back into this (meta: no memory).
        self.skeleton = meta_skeleton(objective.student) if self.zero3 else None
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=objective, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        # The teacher, inference only (see the module docstring): whole on this rank's device under ZeRO-2;
        # under ZeRO-3 sharded by an engine of its own. Its weights move into a copy that engine shards (the
        # caller's teacher keeps its modules, its parameters empty until ``end`` puts them back whole), so
        # that no rank keeps a whole teacher while training.
        self.objective, self.teacher = objective, objective.teacher
        if self.zero3:
            shadow = copy_with_parameters(self.teacher, lambda p: p.data)  # the same storage
            for p in self.teacher.parameters():
                p.data = torch.empty(0, dtype=p.dtype, device=p.device)
            objective.hold_teacher(shadow)
            teacher_config = teacher_deepspeed_config(config, compute_dtype(self.teacher))
            self.teacher_engine = deepspeed.initialize(model=shadow, config=teacher_config)[0]
            self.teacher_engine.eval()
        else:
            self.teacher.to(self.engine.device)
        self.writer = SummaryWriter(str(Path(out) / cfg.stage)) if self.rank == 0 else None
        self.device = self.engine.device
        sampler = torch.utils.data.distributed.DistributedSampler(dataset, self.num_processes, self.rank, shuffle=False)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler)
        self.is_main_process = self.is_local_main_process = self.rank == 0
        self.distributed_type = f"DEEPSPEED_ZERO{self.engine.zero_optimization_stage()}"

    def step(self, ids):
        loss, per_layer = self.engine(ids.to(self.device))
        self.engine.backward(loss)
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()  # clips, steps the optimizer and the schedule and zeroes, at the boundary only
        return loss, per_layer, boundary

    def lr(self):
        return self.engine.get_lr()[0]

    def batches(self, skip):
        return itertools.islice(self.loader, skip, None) if skip else self.loader

    def log(self, values, step):
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def mean(self, value):
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.item() / self.num_processes

    def gather(self, t):
        t = t.to(self.device)  # NCCL moves only CUDA tensors
        out = [torch.zeros_like(t) for _ in range(self.num_processes)]
        torch.distributed.all_gather(out, t)
        return torch.stack(out, 1).flatten()  # interleaved as the sampler dealt them

    def save(self, path):
        self.engine.save_checkpoint(str(path), tag="state")

    def load(self, path):
        self.engine.load_checkpoint(str(path), tag="state")

    def trained(self):
        """The student with its full weights, on every rank (under ZeRO-3, as ``end`` consolidated them)."""
        return self.engine.module.student if not self.zero3 else self.skeleton

    def _consolidated(self, engine):
        """The whole state dict of ``engine``'s module on every rank, on the CPU: DeepSpeed consolidates it on
        rank 0 (every rank takes part, a layer at a time), rank 0 sends it to the others."""
        return broadcast_state(engine._zero3_consolidated_16bit_state_dict(), self.device)

    def barrier(self):
        torch.distributed.barrier()

    def end(self):
        """Close the logs; under ZeRO-3 also put the trained student into the skeleton and the teacher's weights
        back into the caller's teacher (whole, on this rank's device), and remove the engines' hooks."""
        if self.writer is not None:
            self.writer.close()
        if not self.zero3:
            return
        prefix = "student."  # the engine's module is the objective
        state = self._consolidated(self.engine)
        student = self.skeleton
        student.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, assign=True)
        unwrap_peft(student).tie_weights()  # assign gave tied names one tensor in two Parameters: one again
        state = self._consolidated(self.teacher_engine)
        for name, p in self.teacher.named_parameters():  # a tied parameter once
            p.data = state[name].to(self.device)
        self.teacher.to(self.device)  # its buffers
        self.objective.hold_teacher(self.teacher)
        for engine in (self.engine, self.teacher_engine):
            engine.destroy()


class AccelerateRun:
    """accelerate behind the ``Runner`` calls: one process, or DDP (NCCL on CUDA, gloo on CPU) under
    ``accelerate launch`` or torchrun. The LR schedule is stepped here, once an optimizer step (not handed to
    accelerate, which would step it once a process), and saved beside accelerate's state as scheduler_lr.pt."""

    def __init__(self, objective, optimizer, scheduler, dataset, cfg, cuda, out, dtype=torch.float32):
        from accelerate import Accelerator
        from accelerate.utils import AutocastKwargs

        precision = "no" if cfg.mixed_precision == "auto" else cfg.mixed_precision  # auto: the models' dtype decides
        handlers = []
        if precision == "no" and dtype == torch.float16 and cuda:
            # An fp16 student needs loss scaling: accelerate's fp16 scaler, its autocast off.
            precision, handlers = "fp16", [AutocastKwargs(enabled=False)]
        self.acc = acc = Accelerator(
            cpu=not cuda,
            gradient_accumulation_steps=cfg.grad_accum,
            mixed_precision=precision,
            log_with="tensorboard",
            project_dir=str(out),
            kwargs_handlers=handlers,
        )
        objective.teacher.to(acc.device)  # whole on each process, inference only
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False)
        self.objective, self.optimizer, self.loader = acc.prepare(objective, optimizer, loader)
        self.scheduler = scheduler
        self.params = [p for p in objective.parameters() if p.requires_grad]
        self.max_grad_norm = cfg.max_grad_norm
        self.device, self.num_processes = acc.device, acc.num_processes
        self.is_main_process, self.is_local_main_process = acc.is_main_process, acc.is_local_main_process
        self.distributed_type = str(acc.distributed_type).split(".")[-1]
        acc.init_trackers(cfg.stage, config={k: str(v) for k, v in cfg.to_dict().items()})

    def step(self, ids):
        with self.acc.accumulate(self.objective):
            loss, per_layer = self.objective(ids)
            self.acc.backward(loss)
            if self.acc.sync_gradients:
                self.acc.clip_grad_norm_(self.params, self.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        boundary = self.acc.sync_gradients
        if boundary:
            self.scheduler.step()
        return loss, per_layer, boundary

    def lr(self):
        return self.scheduler.get_last_lr()[0]

    def batches(self, skip):
        return self.acc.skip_first_batches(self.loader, skip) if skip else self.loader

    def mean(self, value):
        return self.acc.reduce(torch.tensor(value, device=self.device), "mean").item()

    def gather(self, t):
        return self.acc.gather(t.to(self.device))

    def log(self, values, step):
        self.acc.log(values, step=step)

    def save(self, path):
        self.acc.save_state(str(path))
        if self.is_main_process:
            torch.save(self.scheduler.state_dict(), Path(path) / "scheduler_lr.pt")

    def load(self, path):
        self.acc.load_state(str(path))
        self.scheduler.load_state_dict(torch.load(Path(path) / "scheduler_lr.pt"))

    def trained(self):
        return self.acc.unwrap_model(self.objective).student

    def barrier(self):
        self.acc.wait_for_everyone()

    def end(self):
        self.acc.end_training()
