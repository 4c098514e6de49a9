"""LoLCATs' hybrid: softmax attention over the last ``window`` tokens plus linear attention over everything
older, both in one normaliser and mixed per head by a factor ``a`` in (0, 1):

    o_i = (a * sum_win exp(s_ij - m_i) v_j + (1 - a) * sum_old f(q_i).f(k_j) v_j)
          / (a * sum_win exp(s_ij - m_i)     + (1 - a) * sum_old f(q_i).f(k_j))

where the window of query i holds keys i-window+1..i, m_i is the max score over it, and "old" keys
are folded into a linear state [S | z]. Forms: ``naive`` (parallel), ``chunk``, ``recurrent``.
Each call takes the previous window (at most window-1 tokens) and state and returns the new state;
the caller keeps the last window-1 tokens (transformers' sliding-window cache layer does exactly that).
"""
