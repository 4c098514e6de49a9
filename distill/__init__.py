"""Distillation: data (packing, chat templates, held-out split), the attention-transfer and end-to-end
KD stages, and the trainer (accelerate / DeepSpeed) with atomic checkpoints and exact resume."""
