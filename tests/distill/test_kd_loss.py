"""The chunked KD loss (what training uses) equals the reference ``kd_loss`` on full [batch, seq, vocab]
logits, in value and in gradients, and never makes logits for more than a chunk of tokens at once."""

import pytest
import torch
from torch import nn

from linearize.convert.convert import convert
from linearize.distill.config import TrainConfig
from linearize.distill.objectives import KDObjective
from linearize.distill.stages import causal_lm_parts, chunked_kd_loss, kd_loss, select_trainable

from helpers import perturb_new_parameters, tiny_base

B, T, D, V = 2, 7, 16, 50  # 14 tokens


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 5, 7, 14, 64])  # 5 does not divide the 14 tokens; 64 exceeds them
@pytest.mark.parametrize("top_k", [None, 6])
@pytest.mark.parametrize("temperature,ce_weight", [(1.0, 0.0), (2.0, 0.0), (1.5, 0.4)])
def test_chunked_equals_reference_in_value_and_gradients(chunk, top_k, temperature, ce_weight):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    student_head, teacher_head = nn.Linear(D, V, bias=False), nn.Linear(D, V, bias=False)
    hidden = torch.randn(B, T, D, generator=g).requires_grad_(True)
    teacher_hidden = torch.randn(B, T, D, generator=g)
    ids = torch.randint(0, V, (B, T), generator=g)
    options = dict(temperature=temperature, top_k=top_k, ce_weight=ce_weight, input_ids=ids)

    ref = kd_loss(student_head(hidden), teacher_head(teacher_hidden), **options)
    ref_grads = torch.autograd.grad(ref, [hidden, student_head.weight])
    loss = chunked_kd_loss(hidden, teacher_hidden, student_head, teacher_head, chunk=chunk, **options)
    *grads, teacher_grad = torch.autograd.grad(
        loss, [hidden, student_head.weight, teacher_head.weight], allow_unused=True
    )

    close(loss, ref)
    for got, want in zip(grads, ref_grads):
        close(got, want)
    assert teacher_grad is None  # the teacher's logits are made under no_grad


def record_head_outputs(model):
    """Shapes of every output of ``model``'s output head (forward and backward's recomputation)."""
    shapes = []
    model.get_output_embeddings().register_forward_hook(lambda m, args, out: shapes.append(tuple(out.shape)))
    return shapes


@pytest.mark.parametrize("train", ["lora+new", "all"])  # peft-wrapped student; or every weight, the head's too
def test_kd_step_equals_reference_kd_loss_on_full_logits(train):
    teacher = tiny_base("llama")
    student = perturb_new_parameters(convert(teacher, "lolcats", window=4))
    model = select_trainable(student, "kd", train)
    teacher.requires_grad_(False)
    cfg = TrainConfig(stage="kd", temperature=2.0, top_k=None, ce_weight=0.3, kd_chunk=10)
    ids = torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(3))
    params = [p for p in model.parameters() if p.requires_grad]

    with torch.no_grad():
        teacher_logits = teacher(ids).logits
    ref = kd_loss(model(input_ids=ids).logits, teacher_logits, cfg.temperature, cfg.top_k, cfg.ce_weight, ids)
    ref_grads = torch.autograd.grad(ref, params)

    student_shapes, teacher_shapes = record_head_outputs(student), record_head_outputs(teacher)
    loss, _ = KDObjective(model, teacher, cfg)(ids)
    grads = torch.autograd.grad(loss, params)

    close(loss, ref)
    for got, want in zip(grads, ref_grads):
        close(got, want)
    # Logits were made 10 tokens at a time (32 tokens: chunks of 10, 10, 10, 2), never for the whole batch,
    # and backward remade each chunk's (student and teacher; last chunk first) instead of keeping them.
    chunks = [(10, 128)] * 3 + [(2, 128)]
    assert student_shapes == teacher_shapes == chunks + chunks[::-1]


def test_a_model_that_rescales_its_logits_is_refused():
    model = tiny_base("llama")
    model.config.logit_scale = 0.5  # as Cohere's forward multiplies the head's output
    with pytest.raises(ValueError, match="logit_scale=0.5"):
        causal_lm_parts(model)
