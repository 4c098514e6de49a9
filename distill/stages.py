"""The two distillation stages as losses, plus what each trains.

- transfer (LoLCATs' attention transfer): for every converted layer, MSE between the mixer's output
  and the frozen softmax attention's output on the same layer input, both taken from one forward
  pass of the teacher. Each layer's loss reaches only its own mixer: no backpropagation through the
  network. Only the parameters the conversion added train.
- kd: KL divergence from the teacher's next-token distribution (temperature, optional top-k) plus
  optional cross-entropy, training LoRA adapters (peft) or chosen parameter groups.
"""

import torch
import torch.nn.functional as F

TRAINABLE = ("lora", "new", "lora+new", "attention", "mlp", "all")


class AttentionCapture:
    """Forward hooks on the teacher's attention modules: each layer's input (hidden states, rotary
    embeddings) and its output, for the layers ``layers``."""

    def __init__(self, teacher, layers):
        self.records, self.handles = {}, []
        for i in layers:
            attn = teacher.model.layers[i].self_attn
            self.handles.append(attn.register_forward_hook(self._hook(i), with_kwargs=True))

    def _hook(self, i):
        def hook(module, args, kwargs, output):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            self.records[i] = (hidden, kwargs.get("position_embeddings"), output[0])

        return hook

    def __enter__(self):
        return self.records

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def transfer_loss(student, teacher, input_ids, attention_mask=None):
    """(mean MSE over converted layers, {layer: loss}) for one batch."""
    mixers = student.mixers()
    with torch.no_grad(), AttentionCapture(teacher, mixers) as records:
        teacher(input_ids, attention_mask=attention_mask)
    losses = {}
    for i, mixer in mixers.items():
        hidden, position_embeddings, target = records[i]
        out, _ = mixer(hidden, position_embeddings=position_embeddings, attention_mask=attention_mask)
        losses[i] = F.mse_loss(out.float(), target.float())
    return torch.stack(list(losses.values())).mean(), {i: v.detach() for i, v in losses.items()}


def kd_loss(student_logits, teacher_logits, temperature=1.0, top_k=None, ce_weight=0.0, input_ids=None):
    """KL(teacher || student) per token (scaled by T^2), over the teacher's top-k tokens when given,
    plus ``ce_weight`` x next-token cross-entropy on ``input_ids``."""
    s = student_logits.float() / temperature
    t = teacher_logits.float() / temperature
    if top_k:
        idx = t.topk(top_k, dim=-1).indices
        s, t = s.gather(-1, idx), t.gather(-1, idx)
    log_p_t, log_p_s = t.log_softmax(-1), s.log_softmax(-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean() * temperature**2
    if ce_weight and input_ids is not None:
        ce = F.cross_entropy(student_logits[:, :-1].float().reshape(-1, student_logits.shape[-1]),
                             input_ids[:, 1:].reshape(-1))
        return kl + ce_weight * ce
    return kl


def new_parameters(student):
    """The parameters the conversion added (feature maps, mixing factors, dt/A, convolutions, gates)."""
    out = []
    for mixer in student.mixers().values():
        names = set(mixer.new_parameter_names())
        out += [p for n, p in mixer.named_parameters() if n in names]
    return out


def select_trainable(student, stage, train="lora", lora_r=8, lora_alpha=16, lora_targets=("q_proj", "k_proj", "v_proj", "o_proj")):
    """Freeze the student, then unfreeze what the stage trains. Returns the (possibly peft-wrapped)
    model. transfer: the new parameters. kd: ``train`` in TRAINABLE (default LoRA on q/k/v/o)."""
    student.requires_grad_(False)
    if stage == "transfer":
        params = new_parameters(student)
        if not params:
            raise ValueError("this target adds no parameters, so attention transfer has nothing to train; run kd")
        for p in params:
            p.requires_grad_(True)
        return student
    if train not in TRAINABLE:
        raise ValueError(f"unknown --train {train!r}: choose one of {', '.join(TRAINABLE)}")
    model = student
    if "lora" in train:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(student, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0,
                                                   target_modules=list(lora_targets)))
    if "new" in train:
        for p in new_parameters(student):
            p.requires_grad_(True)
    if train in ("attention", "mlp", "all"):
        for name, p in student.named_parameters():
            if train == "all" or (train == "attention" and ".self_attn." in name) or (train == "mlp" and ".mlp." in name):
                p.requires_grad_(True)
    return model


def merge(model):
    """The plain converted model, with LoRA adapters merged into their weights (loads without peft)."""
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model
