"""Parallel form of the gated delta rule: the chunked algorithm with one chunk spanning the sequence
(a single triangular solve over all T tokens; quadratic, the reference)."""

from linearize.kernels.delta_rule.chunk import chunk_gated_delta


def naive_gated_delta(q, k, v, beta, g=None, scale=1.0, initial_state=None, output_final_state=False):
    return chunk_gated_delta(q, k, v, beta, g, scale, initial_state, output_final_state, chunk_size=max(q.shape[1], 1))
