"""Gated delta rule (Yang et al., Gated Delta Networks, ICLR 2025):

    S_t = exp(g_t) S_{t-1};  S_t = S_t + beta_t k_t (v_t - S_t^T k_t)^T;  o_t = scale * S_t^T q_t

Forms: ``naive`` (the recurrence written out, token by token: the reference), ``chunk`` (one triangular
solve per chunk, the state carried between chunks: training and prefill), ``recurrent`` (``gated_delta_step``,
one token: decode). ``dispatch`` uses fla on CUDA.
"""
