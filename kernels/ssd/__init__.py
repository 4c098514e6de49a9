"""Mamba-2's state-space duality (SSD) scan, written as the linear-attention recurrence it is.

Forms: ``naive`` (the recurrence written out, token by token: the reference), ``chunk`` (Mamba-2's minimal SSD:
training and prefill), ``recurrent`` (``ssd_step``, one token: decode). ``dispatch`` runs fla's simple-GLA on CUDA.
"""
