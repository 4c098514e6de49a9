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
