"""Causal (optionally decayed) linear attention: o_t = q_t S_t, S_t = exp(g_t) S_{t-1} + k_t v_t^T.

Three forms that agree: ``naive`` (parallel, quadratic: the reference), ``chunk`` (training and
prefill) and ``recurrent`` (one step at a time: decode). ``dispatch`` picks fla's Triton kernel on CUDA.
A normalised linear attention is the same recurrence run on ``[v, 1]``: the last column of the
state is then the normaliser z_t = sum_s k_s (see ``normalize_with_ones``).
"""
