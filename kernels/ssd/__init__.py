"""Mamba-2's state-space duality (SSD) scan, written as the linear-attention recurrence it is."""
