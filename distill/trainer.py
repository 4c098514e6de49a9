"""The trainer: one loop for both stages, on accelerate (one process or DDP) or the DeepSpeed engine (ZeRO-2/3),
with gradient accumulation and checkpointing, an LR schedule, clipping, teacher outputs computed on
the fly, atomic checkpoints and exact resume, a progress bar, TensorBoard logs and a loss-curve PNG.

Precision: the student computes in the dtype it was loaded in (``--dtype``; bf16 on CUDA, fp32 on CPU),
the teacher in its own (the same one in a run, but the stages accept any pair). The parameters a stage
trains are held in fp32 (``TrainedInFP32``): the optimizer updates fp32 weights with fp32 moments, and the
modules that own them hand the model's dtype on, so everything else computes in the model's dtype;
recurrent states and normalisers accumulate in fp32 inside the kernels. No autocast: the kernels' fp32
accumulation is never overridden. Under DeepSpeed with ``"bf16": {"enabled": "auto"}`` (on for a bf16
student) the engine casts the student to bf16 and keeps the fp32 master weights in its optimizer. The
trained student comes back wholly in its dtype.

Checkpoints are on by default: every tenth of the stage's optimizer steps (``save_every=None``) and at
least every 30 minutes (``save_minutes``), so a killed run loses at most that much work. Each is written
to ``checkpoints/.tmp-step-N`` and renamed to ``checkpoints/step-N`` only once complete (``state.json``
is written last), so a run killed mid-write never leaves a checkpoint that resume would load; once a
newer one is complete the older ones are deleted (resume needs only the newest).

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
import dataclasses
import itertools
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from torch import nn

from linearize.convert.mixer_base import SettingError
from linearize.distill.stages import (TRAINABLE, TRANSFER_MODES, causal_lm_parts, chunked_kd_loss, merge,
                                      select_trainable, transfer_loss)


@dataclasses.dataclass
class TrainConfig:
    stage: str = "transfer"  # transfer | kd
    transfer_mode: str = "streamed"  # transfer: streamed (a teacher layer, one mixer's graph at a time) | whole
    tokens: int = 50_000  # training tokens (global), rounded down to whole optimizer steps
    seq_len: int = 512
    batch_size: int = 2  # sequences per micro-batch per process
    grad_accum: int = 1
    lr: float = 1e-2
    weight_decay: float = 0.0
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int | None = None  # optimizer steps between checkpoints (None: a tenth of the stage's; 0: not by steps)
    save_minutes: float = 30.0  # also checkpoint when this many minutes passed since the last one (0: not by time)
    temperature: float = 1.0  # kd
    top_k: int | None = None  # kd: KL over the teacher's top-k tokens
    ce_weight: float = 0.0  # kd: weight of next-token cross-entropy
    kd_chunk: int = 1024  # kd: tokens whose logits are made at once (memory: kd_chunk x vocab, not batch x seq x vocab)
    train: str = "lora"  # kd: lora | new | lora+new | attention | mlp | all
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple = ("q_proj", "k_proj", "v_proj", "o_proj")
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"  # accelerate's autocast on top of the models' dtype (--dtype): no, bf16, fp16
    deepspeed: str | None = None  # a DeepSpeed JSON config (distill/configs/zero2.json, zero3.json)

    def __post_init__(self):
        """Degenerate settings fail here, at construction, with one line naming the flag: before any model
        loads or any earlier run's work is cleared."""
        for name, low in (("tokens", 1), ("seq_len", 2), ("batch_size", 1), ("grad_accum", 1), ("warmup_steps", 0),
                          ("kd_chunk", 1), ("lora_r", 1), ("save_every", 0), ("top_k", 1)):
            value = getattr(self, name)
            if value is None and name in ("save_every", "top_k"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SettingError(f"bad --{name.replace('_', '-')} {value!r}: a whole number >= {low}")
        for name, low, above in (("lr", 0, True), ("temperature", 0, True), ("max_grad_norm", 0, True),
                                 ("lora_alpha", 0, True), ("weight_decay", 0, False), ("ce_weight", 0, False),
                                 ("save_minutes", 0, False), ("min_lr_ratio", 0, False)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    value > low if above else value >= low) or not math.isfinite(value):
                raise SettingError(f"bad --{name.replace('_', '-')} {value!r}: a number {'>' if above else '>='} {low}")
        if self.min_lr_ratio > 1:
            raise SettingError(f"bad --min-lr-ratio {self.min_lr_ratio!r}: a fraction of --lr, at most 1")
        for name, choices in (("stage", ("transfer", "kd")), ("transfer_mode", TRANSFER_MODES), ("train", TRAINABLE),
                              ("mixed_precision", ("no", "auto", "bf16", "fp16"))):
            if getattr(self, name) not in choices:
                what = "transfer mode" if name == "transfer_mode" else f"--{name.replace('_', '-')}"
                raise SettingError(f"unknown {what} {getattr(self, name)!r}: choose one of {', '.join(choices)}")

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def compute_dtype(model):
    """The dtype a model computes in: that of its input embeddings (the dtype it was loaded in)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    return inner.get_input_embeddings().weight.dtype


def _cast_floating(value, dtype):
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, tuple):
        return tuple(_cast_floating(v, dtype) for v in value)
    return value


class _CastInputs:
    """Forward pre-hook: floating inputs to the dtype of the module's weights (fp32, or bf16 once DeepSpeed's
    engine has cast the module)."""

    def __call__(self, module, args):
        dtype = next(p.dtype for p in module.parameters(recurse=False) if p.is_floating_point())
        return _cast_floating(args, dtype)


class _CastOutputs(_CastInputs):
    """Forward hook: floating outputs to ``dtype``."""

    def __init__(self, dtype):
        self.dtype = dtype

    def __call__(self, module, args, output):
        return _cast_floating(output, self.dtype)


# torch layers whose forward needs its input in its weights' dtype: a trained one computes in fp32.
_TORCH_LAYERS = (nn.Linear, nn.Embedding, nn.Conv1d, nn.LayerNorm, nn.GroupNorm)


class TrainedInFP32:
    """Hold the trained parameters of a model that computes in ``dtype`` (bf16 or fp16) in fp32: the
    optimizer then updates fp32 weights (no bf16 rounding of small updates) with fp32 moments. Each
    module that owns one hands ``dtype`` on: a torch layer (Linear, Embedding, ...) takes its input in
    fp32 and its output is cast back; other modules (mixers, feature maps, norms) already cast their
    parameters to their input's dtype where they use them, and their output is cast to ``dtype`` where
    type promotion made it fp32. peft's LoRA adapters are fp32 already (peft casts them so) and take care
    of their own casts. ``restore()`` removes the hooks and casts every parameter back to ``dtype``."""

    def __init__(self, model, dtype):
        self.model, self.dtype = model, dtype
        if dtype == torch.float32:
            return
        trained = {id(p) for p in model.parameters() if p.requires_grad and p.dtype != torch.float32}
        for module in model.modules():  # every owner of a trained parameter (a tied one has two)
            if not any(id(p) in trained for p in module.parameters(recurse=False)):
                continue
            if isinstance(module, _TORCH_LAYERS):
                module.register_forward_pre_hook(_CastInputs())
            module.register_forward_hook(_CastOutputs(dtype))
        for p in model.parameters():
            if id(p) in trained:
                p.data = p.data.float()

    def restore(self, model=None):
        """Remove the hooks and cast the parameters to the compute dtype, in ``model`` (default: the one
        given; the trained model may be another object, such as the copy ZeRO-3's weights are gathered into)."""
        model = self.model if model is None else model
        for m in {*self.model.modules(), *model.modules()}:
            for hooks in (m._forward_pre_hooks, m._forward_hooks):
                for key in [k for k, h in hooks.items() if isinstance(h, _CastInputs)]:
                    del hooks[key]
        if self.dtype != torch.float32:
            for p in model.parameters():
                if p.is_floating_point() and p.dtype != self.dtype:
                    p.data = p.data.to(self.dtype)
        return model


class TransferObjective(nn.Module):
    """The student as the trained module; the teacher is held outside the module tree so DDP and the
    student's ZeRO engine neither wrap nor shard it (ZeRO-3 shards it in an engine of its own). ``mode``:
    streamed or whole (``stages.transfer_loss``)."""

    def __init__(self, student, teacher, dtype=None, mode="streamed"):
        super().__init__()
        self.student = student
        self._teacher = (teacher,)
        self.dtype = dtype
        self.mode = mode

    @property
    def teacher(self):
        return self._teacher[0]

    def forward(self, input_ids):
        return transfer_loss(self.student, self.teacher, input_ids, dtype=self.dtype, mode=self.mode)


class KDObjective(nn.Module):
    """KD from final hidden states: the decoders run whole, the output heads chunk by chunk inside
    ``chunked_kd_loss``, so the full [batch, seq, vocab] logits never exist."""

    def __init__(self, student, teacher, cfg):
        super().__init__()
        self.student = student
        self._teacher = (teacher,)
        self.cfg = cfg

    @property
    def teacher(self):
        return self._teacher[0]

    def forward(self, input_ids):
        teacher_decoder, teacher_head = causal_lm_parts(self.teacher)
        decoder, head = causal_lm_parts(self.student)
        with torch.no_grad():
            teacher_hidden = teacher_decoder(input_ids=input_ids, use_cache=False).last_hidden_state
        hidden = decoder(input_ids=input_ids, use_cache=False).last_hidden_state
        cfg = self.cfg
        loss = chunked_kd_loss(hidden, teacher_hidden, head, teacher_head, cfg.temperature, cfg.top_k, cfg.ce_weight,
                               input_ids, cfg.kd_chunk)
        return loss, {}


# Settings whose change makes a resumed run differ from the one that wrote the checkpoint.
RESUME_KEYS = ("stage", "tokens", "seq_len", "batch_size", "grad_accum", "lr", "weight_decay", "warmup_steps",
               "min_lr_ratio", "max_grad_norm", "seed", "temperature", "top_k", "ce_weight", "train", "lora_r",
               "lora_alpha", "lora_targets")


def latest_checkpoint(out):
    """The newest complete checkpoint folder under ``out/checkpoints`` (with state.json), or None."""
    root = Path(out) / "checkpoints"
    done = [p for p in root.glob("step-*") if (p / "state.json").exists()] if root.exists() else []
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def checkpoint_interval(cfg, steps):
    """Optimizer steps between checkpoints: ``cfg.save_every``, or a tenth of the stage's ``steps`` when None."""
    return max(1, steps // 10) if cfg.save_every is None else cfg.save_every


def save_checkpoint(run, scheduler, out, step, history, extra=None):
    """Write ``checkpoints/step-<step>`` atomically, then delete the older complete checkpoints."""
    root = Path(out) / "checkpoints"
    final, tmp = root / f"step-{step}", root / f".tmp-step-{step}"
    if run.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    run.barrier()
    run.save(tmp)
    run.barrier()
    if run.is_main_process:
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler_lr.pt")
        state = {"step": step, "history": history, **(extra or {})}
        (tmp / "state.json").write_text(json.dumps(state))  # written last
        os.replace(tmp, final)
        for old in [*root.glob("step-*"), *root.glob(".tmp-step-*")]:  # older ones, and writes a kill cut short
            number = old.name.rsplit("-", 1)[1]
            if number.isdigit() and int(number) < step:
                shutil.rmtree(old, ignore_errors=True)
    run.barrier()


def plot_losses(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


GATHER_ON_SAVE = "stage3_gather_16bit_weights_on_model_save"


def check_deepspeed_config(path):
    """The DeepSpeed config at ``path`` as a dict; ValueError (one line) if it is missing, not a JSON object, or a
    ZeRO-3 config with stage3_gather_16bit_weights_on_model_save false: the trained student is consolidated from
    the shards at the end of each stage."""
    try:
        ds = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--deepspeed {path}: not a readable JSON config ({type(err).__name__}: {err})") from None
    if not isinstance(ds, dict):
        raise ValueError(f"--deepspeed {path}: not a JSON object")
    zero = ds.get("zero_optimization") or {}
    if zero.get("stage") == 3 and zero.get(GATHER_ON_SAVE, "auto") not in ("auto", True):
        raise ValueError(f"--deepspeed {path}: {GATHER_ON_SAVE} is {zero[GATHER_ON_SAVE]!r}; ZeRO-3 needs true (or "
                         f"auto): the trained student is consolidated from the shards at the end of each stage")
    return ds


def deepspeed_config(cfg, dtype):
    """The DeepSpeed JSON config with its "auto" values filled from the TrainConfig; bf16 (fp16) is
    enabled where the student computes in bf16 (fp16). ZeRO-3 consolidates the trained weights at the end
    of the stage, so its stage3_gather_16bit_weights_on_model_save is on (``check_deepspeed_config``)."""
    ds = check_deepspeed_config(cfg.deepspeed)
    auto = {"train_micro_batch_size_per_gpu": cfg.batch_size, "gradient_accumulation_steps": cfg.grad_accum,
            "gradient_clipping": cfg.max_grad_norm}
    for key, value in auto.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    for key in ("bf16", "fp16"):
        if isinstance(ds.get(key), dict) and ds[key].get("enabled") == "auto":
            ds[key]["enabled"] = dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[key]
    ds.pop("train_batch_size", None)
    zero = ds.setdefault("zero_optimization", {})
    if zero.get("stage") == 3:
        zero[GATHER_ON_SAVE] = True
    return ds


def teacher_deepspeed_config(config, dtype):
    """The config of the teacher's inference-only ZeRO-3 engine: the student's ZeRO-3 settings, no optimizer,
    scheduler or clipping (it trains nothing), bf16/fp16 as the teacher's ``dtype`` (so it is not cast)."""
    keep = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "zero_optimization", "steps_per_print",
            "wall_clock_breakdown")
    ds = {k: copy.deepcopy(v) for k, v in config.items() if k in keep}
    ds["bf16"], ds["fp16"] = {"enabled": dtype == torch.bfloat16}, {"enabled": dtype == torch.float16}
    return ds


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
    """The DeepSpeed engine behind the same few calls the loop makes on accelerate, used for every
    --deepspeed run. (accelerate's DeepSpeed integration is off on CPU and does not hand DeepSpeed the
    rank and world size there; the engine itself runs ZeRO-2/3 over gloo on CPU under torchrun, and
    over NCCL on GPUs, so one path serves both and CPU tests prove it.)"""

    def __init__(self, objective, optimizer, scheduler, dataset, cfg, cuda, out, dtype=torch.float32):
        import deepspeed
        from torch.utils.tensorboard import SummaryWriter

        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
        self.rank, self.num_processes = torch.distributed.get_rank(), torch.distributed.get_world_size()
        config = deepspeed_config(cfg, dtype)
        self.zero3 = config["zero_optimization"].get("stage") == 3
        # ZeRO-3 partitions the student in place; the trained weights come back into this (meta: no memory).
        self.skeleton = meta_skeleton(objective.student) if self.zero3 else None
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=objective, optimizer=optimizer,
                                                                 lr_scheduler=scheduler, config=config)
        # The teacher, inference only (see the module docstring): whole on this rank's device under ZeRO-2;
        # under ZeRO-3 sharded by an engine of its own. Its weights move into a copy that engine shards (the
        # caller's teacher keeps its modules, its parameters empty until ``end`` puts them back whole), so
        # that no rank keeps a whole teacher while training.
        self.objective, self.teacher = objective, objective.teacher
        if self.zero3:
            shadow = copy_with_parameters(self.teacher, lambda p: p.data)  # the same storage
            for p in self.teacher.parameters():
                p.data = torch.empty(0, dtype=p.dtype, device=p.device)
            objective._teacher = (shadow,)
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
        self.engine.step()  # clips, steps and zeroes at the accumulation boundary only
        return loss, per_layer, boundary

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
        student.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, assign=True)
        inner = student.get_base_model() if hasattr(student, "get_base_model") else student  # peft
        inner.tie_weights()  # assign gave tied names one tensor in two Parameters: one Parameter again
        state = self._consolidated(self.teacher_engine)
        for name, p in self.teacher.named_parameters():  # a tied parameter once
            p.data = state[name].to(self.device)
        self.teacher.to(self.device)  # its buffers
        self.objective._teacher = (self.teacher,)
        for engine in (self.engine, self.teacher_engine):
            engine.destroy()


class AccelerateRun:
    """accelerate behind the loop's calls: one process, or DDP (NCCL on CUDA, gloo on CPU) under
    ``accelerate launch`` or torchrun."""

    def __init__(self, objective, optimizer, dataset, cfg, cuda, out, dtype=torch.float32):
        from accelerate import Accelerator
        from accelerate.utils import AutocastKwargs

        precision = "no" if cfg.mixed_precision == "auto" else cfg.mixed_precision  # "auto": before --dtype
        handlers = []
        if precision == "no" and dtype == torch.float16 and cuda:
            # An fp16 student needs loss scaling: accelerate's fp16 scaler, its autocast off.
            precision, handlers = "fp16", [AutocastKwargs(enabled=False)]
        self.acc = acc = Accelerator(cpu=not cuda, gradient_accumulation_steps=cfg.grad_accum, mixed_precision=precision,
                                     log_with="tensorboard", project_dir=str(out), kwargs_handlers=handlers)
        objective.teacher.to(acc.device)  # whole on each process, inference only
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False)
        self.objective, self.optimizer, self.loader = acc.prepare(objective, optimizer, loader)
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
        return loss, per_layer, self.acc.sync_gradients

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

    def load(self, path):
        self.acc.load_state(str(path))

    def trained(self):
        return self.acc.unwrap_model(self.objective).student

    def barrier(self):
        self.acc.wait_for_everyone()

    def end(self):
        self.acc.end_training()


def train(student, teacher, blocks, cfg, out, resume=False, progress=True, log=None):
    """Run one stage on ``blocks`` [N, seq_len]; returns (trained student with LoRA merged, summary, history).
    With ``resume`` it continues from the newest complete checkpoint under ``out`` and logs which (path, step,
    tokens seen), or logs that there is none and starts fresh. ``log`` takes those lines (default: stderr)."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    out = Path(out)
    cuda = torch.cuda.is_available()
    set_seed(cfg.seed)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = cfg.batch_size * cfg.grad_accum * world  # sequences per optimizer step
    steps = max(1, min(cfg.tokens // (per_step * cfg.seq_len), len(blocks) // per_step))
    blocks = blocks[: steps * per_step, : cfg.seq_len]
    dtype = compute_dtype(student)
    model = select_trainable(student, cfg.stage, cfg.train, cfg.lora_r, cfg.lora_alpha, cfg.lora_targets)
    fp32 = TrainedInFP32(model, dtype)
    if cfg.gradient_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    teacher.eval().requires_grad_(False)
    objective = (TransferObjective(model, teacher, dtype, cfg.transfer_mode) if cfg.stage == "transfer"
                 else KDObjective(model, teacher, cfg))
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, steps)
    if cfg.min_lr_ratio:
        floor, base_lambda = cfg.min_lr_ratio, scheduler.lr_lambdas[0]
        scheduler.lr_lambdas[0] = lambda s: floor + (1 - floor) * base_lambda(s)
    dataset = torch.utils.data.TensorDataset(blocks, torch.arange(len(blocks)))  # with indices: who saw what
    if cfg.deepspeed:
        run = DeepSpeedRun(objective, optimizer, scheduler, dataset, cfg, cuda, out, dtype)
        scheduler = None  # the engine steps it
    else:
        run = AccelerateRun(objective, optimizer, dataset, cfg, cuda, out, dtype)
    if log is None:
        def log(line):
            print(line, file=sys.stderr, flush=True)
    say = log if run.is_main_process else (lambda line: None)

    step, history = 0, []
    tokens_per_step = per_step * cfg.seq_len
    if resume and (ckpt := latest_checkpoint(out)) is not None:
        run.load(ckpt)
        if scheduler is not None:
            scheduler.load_state_dict(torch.load(ckpt / "scheduler_lr.pt"))
        state = json.loads((ckpt / "state.json").read_text())
        step, history = state["step"], state["history"]
        say(f"{cfg.stage}: resuming from {ckpt} at step {step} of {steps} "
            f"({step * tokens_per_step:,} of {steps * tokens_per_step:,} tokens seen)")
        changed = {k: (v, cfg.to_dict().get(k)) for k, v in state.get("config", {}).items()
                   if k in RESUME_KEYS and cfg.to_dict().get(k) != v}
        if changed:
            say(f"{cfg.stage}: warning: settings differ from the checkpoint's (then -> now): "
                + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
    elif resume:
        say(f"{cfg.stage}: nothing to resume (no complete checkpoint in {out / 'checkpoints'}); starting fresh")
    every = checkpoint_interval(cfg, steps)
    last_save = time.time()
    bar = tqdm(total=steps, initial=step, desc=cfg.stage, disable=not (progress and run.is_local_main_process))
    t0, tokens_done, running, seen = time.time(), 0, 0.0, []
    objective.train()
    for ids, index in run.batches(step * cfg.grad_accum):
        if step >= steps:
            break
        seen.append(index)
        loss, per_layer, boundary = run.step(ids)
        running += loss.detach().float().item() / cfg.grad_accum
        tokens_done += ids.numel() * run.num_processes
        if not boundary:
            continue
        if scheduler is not None:
            scheduler.step()
        step += 1
        loss_value, running = run.mean(running), 0.0
        lr = (scheduler.get_last_lr() if scheduler is not None else run.engine.get_lr())[0]
        record = {"step": step, "loss": loss_value, "lr": lr}
        if per_layer:
            record["layers"] = {str(i): round(v.item(), 6) for i, v in per_layer.items()}
        history.append(record)
        run.log({"loss": loss_value, "lr": lr, **{f"layer_{i}": v for i, v in record.get("layers", {}).items()}}, step)
        bar.set_postfix(loss=f"{loss_value:.4g}", tok_s=f"{tokens_done / max(time.time() - t0, 1e-9):.0f}")
        bar.update(1)
        due = bool(every) and step % every == 0
        if cfg.save_minutes and not due:
            due = time.time() - last_save >= 60 * cfg.save_minutes
            if run.num_processes > 1:  # every process must agree: the write has barriers
                due = run.mean(float(due)) > 0
        if due and step < steps:
            save_checkpoint(run, scheduler, out, step, history, extra={"config": cfg.to_dict()})
            last_save = time.time()
    bar.close()
    elapsed = time.time() - t0
    seen = run.gather(torch.cat(seen)).cpu().tolist() if seen else []
    run.end()
    trained = fp32.restore(merge(run.trained()))
    if run.is_main_process and history:
        plot_losses(history, out / f"loss_curve_{cfg.stage}.png")
    summary = {"stage": cfg.stage, "steps": step, "tokens": steps * per_step * cfg.seq_len,
               "seconds": elapsed, "tokens_per_s": tokens_done / max(elapsed, 1e-9),
               "first_loss": history[0]["loss"] if history else None, "last_loss": history[-1]["loss"] if history else None,
               "config": cfg.to_dict(), "samples_seen": seen, "processes": run.num_processes,
               "distributed": run.distributed_type, "dtype": str(dtype).removeprefix("torch.")}
    return trained, summary, history
