"""The math of every recurrence, as plain functions on tensors (no weights).

Layout follows flash-linear-attention: one folder per recurrence, one file per form.
Tensors are ``[batch, time, heads, dim]``; decays are given in log space.
"""
