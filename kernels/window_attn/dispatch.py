"""Pick a form for LoLCATs' window + linear attention: chunked for prefill and training, recurrent for
one-token steps after a prefill. Its linear part runs through ``linear_attn``'s dispatch (fla on CUDA).
Decoding from a cache calls ``window_attn_step``, which reads the cached window in place. ``window_softmax`` is the
same window's softmax alone, for recurrences that mix their output with it (Liger's way)."""

from linearize.kernels.window_attn.chunk import chunk_window_attn, chunk_window_softmax
from linearize.kernels.window_attn.naive import naive_window_attn, naive_window_softmax, with_ones  # noqa: F401
from linearize.kernels.window_attn.recurrent import (  # noqa: F401 (step_decays: the step's constants)
    recurrent_window_attn,
    recurrent_window_softmax,
    step_decays,
    step_window_attn,
)

TORCH_FORMS = {"naive": naive_window_attn, "chunk": chunk_window_attn, "recurrent": recurrent_window_attn}
SOFTMAX_FORMS = {"naive": naive_window_softmax, "chunk": chunk_window_softmax, "recurrent": recurrent_window_softmax}


def window_attn(q, k, fq, fk, v, factor, window, scale, mode="auto", **kwargs):
    """Window + linear attention in the form ``mode``: a torch form name, or 'auto'/'fla' (chunked, or
    recurrent for a single query after cached keys; the chunked form's linear part then runs in ``mode``).
    kwargs: ``naive_window_attn``'s (key_mask, past, initial_state, log_decay, sinks, ...)."""
    if mode in TORCH_FORMS:
        return TORCH_FORMS[mode](q, k, fq, fk, v, factor, window, scale, **kwargs)
    if mode not in ("auto", "fla"):
        raise ValueError(f"unknown window-attention mode {mode!r}; use one of auto, fla, {', '.join(TORCH_FORMS)}")
    if q.shape[1] == 1 and kwargs.get("past") is not None:
        return recurrent_window_attn(q, k, fq, fk, v, factor, window, scale, **kwargs)
    return chunk_window_attn(q, k, fq, fk, v, factor, window, scale, linear_mode=mode, **kwargs)


window_attn_step = step_window_attn  # torch on every device: one query costs ops, not FLOPs


def window_softmax(q, k, v, window, scale, mode="auto", **kwargs):
    """The window's softmax alone in the form ``mode``: a torch form name, or 'auto'/'fla' (chunked, or recurrent
    for a single query after cached keys; no fla kernel: the window is a banded product on every device).
    kwargs: ``naive_window_softmax``'s (key_mask, past, sinks)."""
    if mode in SOFTMAX_FORMS:
        return SOFTMAX_FORMS[mode](q, k, v, window, scale, **kwargs)
    if mode not in ("auto", "fla"):
        raise ValueError(f"unknown window-attention mode {mode!r}; use one of auto, fla, {', '.join(SOFTMAX_FORMS)}")
    if q.shape[1] == 1 and kwargs.get("past") is not None:
        return recurrent_window_softmax(q, k, v, window, scale, **kwargs)
    return chunk_window_softmax(q, k, v, window, scale, **kwargs)
