"""Pick a form for causal linear attention: fla's Triton kernels on CUDA, the torch forms elsewhere."""

import torch

from linearize.kernels.forms import fla_gated_backward_refused, resolve_mode
from linearize.kernels.linear_attn.chunk import chunk_linear_attn
from linearize.kernels.linear_attn.naive import naive_linear_attn
from linearize.kernels.linear_attn.recurrent import recurrent_linear_attn

TORCH_FORMS = {"naive": naive_linear_attn, "chunk": chunk_linear_attn, "recurrent": recurrent_linear_attn}


def fla_simple_gla():
    """fla's (chunk, fused_recurrent) simple-GLA kernels (one decay per head), or None where fla or
    Triton cannot load (CPU)."""
    try:
        from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla
    except Exception:  # ImportError, or Triton failing to find a GPU backend
        return None
    return chunk_simple_gla, fused_recurrent_simple_gla


def fla_gla():
    """fla's GLA kernels (one decay per key dimension), or None."""
    try:
        from fla.ops.gla import chunk_gla, fused_recurrent_gla
    except Exception:
        return None

    def recurrent(q, k, v, g=None, **kwargs):
        return fused_recurrent_gla(q, k, v, gk=g, **kwargs)

    return chunk_gla, recurrent


def linear_attn(q, k, v, g=None, scale=1.0, initial_state=None, output_final_state=False, mode="auto"):
    """Causal linear attention in the form ``mode`` ('auto', 'fla', 'naive', 'chunk', 'recurrent').

    'auto' uses fla on CUDA tensors when it is installed, else the torch chunked form for prefill
    and the recurrent form for single-token steps. Where fla would refuse a gated backward (see
    ``fla_gated_backward_refused``), 'auto' trains through the torch chunked form and still uses fla
    for inference.
    """
    kernels = (fla_gla() if g is not None and g.dim() == 4 else fla_simple_gla()) if q.is_cuda else None
    if g is not None and mode == "auto" and fla_gated_backward_refused(q, k, v, g):
        kernels = None
    form = resolve_mode(mode, q, kernels, TORCH_FORMS, "linear-attention")
    if form != "fla":
        return TORCH_FORMS[form](
            q, k, v, g=g, scale=scale, initial_state=initial_state, output_final_state=output_final_state
        )
    chunk, fused_recurrent = kernels
    fn = fused_recurrent if q.shape[1] == 1 else chunk
    dtype = v.dtype
    o, state = fn(
        q.to(dtype),
        k.to(dtype),
        v,
        g=None if g is None else g.float(),
        scale=scale,
        initial_state=None if initial_state is None else initial_state.float(),
        output_final_state=output_final_state,
    )
    return o.to(dtype), state


def with_ones(v, ones=None):
    """[v, 1]: running the recurrence on it makes the state's last column the normaliser sum_s k_s (and one
    product of window scores with it gives a numerator and its denominator). ``ones``: the column, [..., 1] as v's
    leading shape, where the caller keeps one (a decode step: one op fewer)."""
    return torch.cat([v, v.new_ones(*v.shape[:-1], 1) if ones is None else ones], dim=-1)


def normalized_linear_attn(q, k, v, g=None, initial_state=None, output_final_state=False, mode="auto", eps=1e-6):
    """Linear attention with its normaliser: o_t = q_t S_t / (q_t z_t + eps); the state is [S | z]."""
    o, state = linear_attn(
        q,
        k,
        with_ones(v),
        g=g,
        scale=1.0,
        initial_state=initial_state,
        output_final_state=output_final_state,
        mode=mode,
    )
    o = o.float()
    return (o[..., :-1] / (o[..., -1:] + eps)).to(v.dtype), state
