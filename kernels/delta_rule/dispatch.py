"""Pick a form for the gated delta rule: fla's Triton kernels on CUDA, the torch forms elsewhere."""

from linearize.kernels.delta_rule.chunk import chunk_gated_delta
from linearize.kernels.delta_rule.naive import naive_gated_delta
from linearize.kernels.delta_rule.recurrent import recurrent_gated_delta
from linearize.kernels.forms import fla_gated_backward_refused, resolve_mode

TORCH_FORMS = {"naive": naive_gated_delta, "chunk": chunk_gated_delta, "recurrent": recurrent_gated_delta}


def fla_gated_delta():
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
    except Exception:  # ImportError, or Triton failing to find a GPU backend
        return None
    return chunk_gated_delta_rule, fused_recurrent_gated_delta_rule


def gated_delta(q, k, v, beta, g=None, scale=1.0, initial_state=None, output_final_state=False, mode="auto"):
    """The gated delta rule in the form ``mode`` ('auto', 'fla', 'naive', 'chunk', 'recurrent')."""
    kernels = fla_gated_delta() if q.is_cuda else None
    if mode == "auto" and fla_gated_backward_refused(q, k, v, beta, *(() if g is None else (g,))):
        kernels = None  # the delta rule always runs gated in fla
    form = resolve_mode(mode, q, kernels, TORCH_FORMS, "gated-delta")
    if form != "fla":
        return TORCH_FORMS[form](q, k, v, beta, g, scale, initial_state, output_final_state)
    chunk, recurrent = kernels
    fn = recurrent if q.shape[1] == 1 else chunk
    dtype = v.dtype
    g = q.new_zeros(q.shape[:3], dtype=dtype) if g is None else g.float()
    o, state = fn(
        q.to(dtype),
        k.to(dtype),
        v,
        g=g,
        beta=beta.to(dtype),
        scale=scale,
        initial_state=None if initial_state is None else initial_state.float(),
        output_final_state=output_final_state,
    )
    return o.to(dtype), state
