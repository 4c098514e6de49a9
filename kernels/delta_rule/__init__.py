"""Gated delta rule (Yang et al., Gated Delta Networks, ICLR 2025):

    S_t = exp(g_t) S_{t-1};  S_t = S_t + beta_t k_t (v_t - S_t^T k_t)^T;  o_t = scale * S_t^T q_t

Forms: ``naive`` (parallel: one triangular solve over the whole sequence), ``chunk`` (the same per
chunk, state carried between chunks), ``recurrent`` (token by token). ``dispatch`` uses fla on CUDA.
"""
