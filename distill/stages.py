"""The two distillation stages as losses, plus what each trains.

- transfer (LoLCATs' attention transfer): for every converted layer, MSE between the mixer's output
  and the frozen softmax attention's output on the same layer input, both taken from one forward
  pass of the teacher. Each layer's loss reaches only its own mixer: no backpropagation through the
  network. Only the parameters the conversion added train. Two forms, same losses and gradients:
  ``whole`` runs the teacher (logits included) with hooks recording every converted layer, then every
  mixer, so all mixers' graphs are alive until backward; ``streamed`` walks the teacher's decoder a layer
  at a time, up to the last converted layer, and checkpoints each mixer's loss, so backward replays one
  mixer at a time from its saved input (``streamed_transfer_loss``).
- kd: KL divergence from the teacher's next-token distribution (temperature, optional top-k) plus
  optional cross-entropy, training LoRA adapters (peft) or chosen parameter groups. ``kd_loss`` is the
  reference on full [batch, seq, vocab] logits; training uses ``chunked_kd_loss``, the same loss from the
  final hidden states, a chunk of tokens at a time, so no full-vocabulary tensor spans the batch.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

TRAINABLE = ("lora", "new", "lora+new", "attention", "mlp", "all")
TRANSFER_MODES = ("streamed", "whole")


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


def transfer_loss(student, teacher, input_ids, attention_mask=None, dtype=None, mode="whole"):
    """(mean MSE over converted layers, {layer: loss}) for one batch. The teacher may compute in another
    dtype than the student: each mixer takes the teacher's layer input (hidden states, rotary cos/sin) in
    ``dtype``, the student's compute dtype (default: that of its input embeddings), and the MSE to the
    teacher's attention output is taken in fp32. ``mode``: "whole" (here) or "streamed"
    (``streamed_transfer_loss``): the same value and gradients."""
    if mode not in TRANSFER_MODES:
        raise ValueError(f"unknown transfer mode {mode!r}: choose one of {', '.join(TRANSFER_MODES)}")
    if mode == "streamed":
        return streamed_transfer_loss(student, teacher, input_ids, attention_mask, dtype)
    mixers = student.mixers()
    if dtype is None:
        dtype = student.get_input_embeddings().weight.dtype
    with torch.no_grad(), AttentionCapture(teacher, mixers) as records:
        teacher(input_ids, attention_mask=attention_mask)
    losses = {}
    for i, mixer in mixers.items():
        hidden, position_embeddings, target = records[i]
        if position_embeddings is not None:
            position_embeddings = tuple(t.to(dtype) for t in position_embeddings)
        out, _ = mixer(hidden.to(dtype), position_embeddings=position_embeddings, attention_mask=attention_mask)
        losses[i] = F.mse_loss(out.float(), target.float())
    return torch.stack(list(losses.values())).mean(), {i: v.detach() for i, v in losses.items()}


@torch.no_grad()  # on a generator, torch applies it around each step and restores the caller's mode at yields
def teacher_attention_io(teacher, input_ids, attention_mask=None, layers=()):
    """Walk the teacher's decoder a layer at a time, as its own forward does (embeddings, masks, rotary
    embeddings, then each decoder layer), and yield (i, attention input, position embeddings, attention
    output) for each layer in ``layers``, in order; it stops after the last of them (no later layer, no
    final norm, no logits). Only the running hidden states and the yielded layer's tensors are alive at once."""
    from transformers.masking_utils import LAYER_PATTERN_TO_MASK_FUNCTION_MAPPING

    from linearize.convert.families import base_layer_types

    wanted = set(layers)
    if not wanted:
        return
    decoder, config = teacher.model, teacher.config
    hidden = decoder.embed_tokens(input_ids)
    position_ids = torch.arange(hidden.shape[1], device=hidden.device)[None]
    types = base_layer_types(config)
    masks = {
        kind: LAYER_PATTERN_TO_MASK_FUNCTION_MAPPING[kind](
            config=config, inputs_embeds=hidden, attention_mask=attention_mask, cache=None, position_ids=position_ids
        )
        for kind in set(types[: max(wanted) + 1])
    }
    position_embeddings = decoder.rotary_emb(hidden, position_ids)
    for i, layer in enumerate(decoder.layers[: max(wanted) + 1]):
        with AttentionCapture(teacher, [i] if i in wanted else []) as records:
            hidden = layer(
                hidden,
                attention_mask=masks[types[i]],
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                cache=None,
                use_cache=False,
            )
        if i in wanted:
            yield (i, *records.pop(i))


def _layer_transfer_loss(mixer, hidden, position_embeddings, target, attention_mask):
    out, _ = mixer(hidden, position_embeddings=position_embeddings, attention_mask=attention_mask)
    return F.mse_loss(out.float(), target.float())


def streamed_transfer_loss(student, teacher, input_ids, attention_mask=None, dtype=None):
    """``transfer_loss`` (same value, same gradients) a layer at a time: the teacher is walked layer by layer
    (``teacher_attention_io``), and each converted layer's MSE is taken as soon as its teacher layer has run,
    checkpointed: only the layer's input and target are kept, not the mixer's activations. The trainer's one
    backward then replays the mixers one at a time, last layer first (each loss reaches only its own mixer),
    so one mixer's graph is alive at a time, and the teacher never runs past the last converted layer. The
    price is one extra forward of each mixer. Works under every runner (accelerate, DDP, DeepSpeed ZeRO-2/3):
    it is one loss with one backward, as ``whole``'s."""
    mixers = student.mixers()
    if dtype is None:
        dtype = student.get_input_embeddings().weight.dtype
    losses = {}
    for i, hidden, position_embeddings, target in teacher_attention_io(teacher, input_ids, attention_mask, mixers):
        if position_embeddings is not None:
            position_embeddings = tuple(t.to(dtype) for t in position_embeddings)
        losses[i] = checkpoint(
            _layer_transfer_loss,
            mixers[i],
            hidden.to(dtype),
            position_embeddings,
            target,
            attention_mask,
            use_reentrant=False,
        )
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
        ce = F.cross_entropy(
            student_logits[:, :-1].float().reshape(-1, student_logits.shape[-1]), input_ids[:, 1:].reshape(-1)
        )
        return kl + ce_weight * ce
    return kl


def causal_lm_parts(model):
    """(decoder, output head) of a causal LM, also through a peft wrapper: the decoder returns the final
    (normed) hidden states, the head maps them to logits, as the model's own forward does. Refuses a model
    whose forward rescales or soft-caps the head's output (no family linearize converts does)."""
    inner = unwrap_peft(model)
    for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        value = getattr(inner.config, name, None)
        if value not in (None, 1, 1.0):
            raise ValueError(f"{name}={value}: chunked KD takes logits straight from the output head, so needs none")
    return inner.base_model, inner.get_output_embeddings()


def _kd_chunk(student_hidden, teacher_hidden, targets, student_head, teacher_head, temperature, top_k):
    """(summed KL, summed cross-entropy) over one chunk of tokens [n, hidden]; see ``chunked_kd_loss``."""
    with torch.no_grad():
        t = teacher_head(teacher_hidden).float() / temperature
    logits = student_head(student_hidden).float()
    s = logits / temperature
    if top_k:
        idx = t.topk(top_k, dim=-1).indices
        s, t = s.gather(-1, idx), t.gather(-1, idx)
    log_p_t, log_p_s = t.log_softmax(-1), s.log_softmax(-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()
    ce = F.cross_entropy(logits, targets, reduction="sum") if targets is not None else logits.new_zeros(())
    return kl, ce


def chunked_kd_loss(
    student_hidden,
    teacher_hidden,
    student_head,
    teacher_head,
    temperature=1.0,
    top_k=None,
    ce_weight=0.0,
    input_ids=None,
    chunk=1024,
):
    """``kd_loss(student_head(student_hidden), teacher_head(teacher_hidden), ...)`` (same options, same
    value and gradients up to float rounding) without the [batch, seq, vocab] logits: the batch's
    [batch, seq, hidden] states are flattened to tokens and taken ``chunk`` tokens at a time; each chunk's
    teacher and student logits are made, reduced to a sum and freed before the next. The chunk is
    checkpointed, so backward remakes its logits (the teacher's too, under no_grad) instead of keeping
    them: peak memory is O(chunk x vocab). The heads are called as modules (peft, ZeRO-3 hooks apply)."""
    B, T, _ = student_hidden.shape
    hs, ht = student_hidden.reshape(B * T, -1), teacher_hidden.reshape(B * T, -1)
    with_ce = bool(ce_weight) and input_ids is not None
    # The target of each token is the next one; the last token of each sequence has none (ignored).
    targets = F.pad(input_ids[:, 1:], (0, 1), value=-100).reshape(-1) if with_ce else None
    kl_sum = ce_sum = 0.0
    for a in range(0, B * T, chunk):
        part = slice(a, a + chunk)
        kl, ce = checkpoint(
            _kd_chunk,
            hs[part],
            ht[part],
            targets[part] if with_ce else None,
            student_head,
            teacher_head,
            temperature,
            top_k,
            use_reentrant=False,
            preserve_rng_state=False,
        )
        kl_sum, ce_sum = kl_sum + kl, ce_sum + ce
    loss = kl_sum / (B * T) * temperature**2
    if with_ce:
        return loss + ce_weight * ce_sum / (B * (T - 1))
    return loss


def new_parameters(student):
    """The parameters the conversion added (feature maps, mixing factors, dt/A, convolutions, gates)."""
    out = []
    for mixer in student.mixers().values():
        names = set(mixer.new_parameter_names())
        out += [p for n, p in mixer.named_parameters() if n in names]
    return out


def select_trainable(
    student, stage, train="lora", lora_r=8, lora_alpha=16, lora_targets=("q_proj", "k_proj", "v_proj", "o_proj")
):
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

        model = get_peft_model(
            student, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=list(lora_targets))
        )
    if "new" in train:
        for p in new_parameters(student):
            p.requires_grad_(True)
    if train in ("attention", "mlp", "all"):
        for name, p in student.named_parameters():
            if (
                train == "all"
                or (train == "attention" and ".self_attn." in name)
                or (train == "mlp" and ".mlp." in name)
            ):
                p.requires_grad_(True)
    return model


def unwrap_peft(model):
    """The model inside a peft wrapper (``model`` itself when it has none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def merge(model):
    """The plain converted model, with LoRA adapters merged into their weights (loads without peft)."""
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model
