"""Precision of a training run: the student computes in the dtype it was loaded in (``--dtype``; bf16 on CUDA,
fp32 on CPU), the teacher in its own (the same one in a run, but the stages accept any pair). The parameters a
stage trains are held in fp32 (``TrainedInFP32``): the optimizer updates fp32 weights with fp32 moments, and the
modules that own them hand the model's dtype on, so everything else computes in the model's dtype; recurrent
states and normalisers accumulate in fp32 inside the kernels. No autocast: the kernels' fp32 accumulation is
never overridden. Under DeepSpeed with ``"bf16": {"enabled": "auto"}`` (on for a bf16 student) the engine casts
the student to bf16 and keeps the fp32 master weights in its optimizer. The trained student comes back wholly
in its dtype."""

import torch
from torch import nn

from linearize.distill.stages import unwrap_peft


def compute_dtype(model):
    """The dtype a model computes in: that of its input embeddings (the dtype it was loaded in)."""
    return unwrap_peft(model).get_input_embeddings().weight.dtype


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
