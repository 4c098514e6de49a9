"""Choosing a form: shared by every recurrence's dispatch."""


def resolve_mode(mode, q, fla_kernels, torch_forms, what):
    """'fla' when fla should run (CUDA tensors and its kernels importable), else the torch form to use.

    mode: 'auto' (fla on CUDA, else chunked for prefill and recurrent for one-token steps), 'fla'
    (required; an error where it cannot run), or a torch form name.
    """
    if mode in ("auto", "fla") and q.is_cuda and fla_kernels is not None:
        return "fla"
    if mode == "fla":
        raise RuntimeError("mode='fla' needs flash-linear-attention and Triton with a CUDA device")
    if mode == "auto":
        return "recurrent" if q.shape[1] == 1 else "chunk"
    if mode not in torch_forms:
        raise ValueError(f"unknown {what} mode {mode!r}; use one of auto, fla, {', '.join(torch_forms)}")
    return mode


def fla_gated_backward_refused(*tensors):
    """True when a gradient will flow through ``tensors`` on a GPU where fla refuses the backward of its
    gated chunk kernels: Hopper with Triton >= 3.4 and < 3.7.1 and no tilelang (fla's guard against a
    Triton miscompile, its issue #640). 'auto' then trains through the torch chunked form."""
    import importlib.util

    import torch

    if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors) and tensors[0].is_cuda):
        return False
    try:
        from fla.utils import IS_NVIDIA_HOPPER, TRITON_ABOVE_3_4_0, TRITON_ABOVE_3_7_1
    except Exception:
        return False
    return (
        IS_NVIDIA_HOPPER
        and TRITON_ABOVE_3_4_0
        and not TRITON_ABOVE_3_7_1
        and importlib.util.find_spec("tilelang") is None
    )
