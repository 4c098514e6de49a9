"""Streamed attention transfer (the teacher walked a layer at a time, each mixer's loss checkpointed) gives
the same losses and gradients as the whole form, and holds one mixer's graph at a time: the forward keeps
no mixer activations, backward replays the mixers one at a time (each one's gradients done before the next
is recomputed), and the teacher runs neither past the last converted layer nor its output head."""

import pytest
import torch

from linearize.convert.convert import convert
from linearize.distill.config import TrainConfig
from linearize.distill.objectives import TransferObjective
from linearize.distill.stages import select_trainable, transfer_loss
from linearize.distill.trainer import train

from helpers import FAMILIES, perturb_new_parameters, tiny_base

PLANS = {"all converted": "none", "hybrid": "1"}  # keep-attention: none, or layer 1 of 3 kept as softmax


def setup(family, keep, layers=3):
    teacher = tiny_base(family, layers=layers).requires_grad_(False)
    student = perturb_new_parameters(convert(teacher, "lolcats", window=4, decay=16, sinks=2, keep_attention=keep))
    select_trainable(student, "transfer")
    ids = torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding in one row
    return teacher, student, ids, mask


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_equals_whole_in_losses_and_gradients(family, plan):
    teacher, student, ids, mask = setup(family, PLANS[plan])
    params = [p for p in student.parameters() if p.requires_grad]
    results = {}
    for mode in ("whole", "streamed"):
        loss, per_layer = transfer_loss(student, teacher, ids, attention_mask=mask, mode=mode)
        results[mode] = loss, per_layer, torch.autograd.grad(loss, params)
    (loss, per_layer, grads), (ref, ref_per_layer, ref_grads) = results["streamed"], results["whole"]
    assert list(per_layer) == list(ref_per_layer) == sorted(student.mixers())
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-7)
    for i in per_layer:
        torch.testing.assert_close(per_layer[i], ref_per_layer[i], rtol=1e-5, atol=1e-7)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert all(g.abs().sum() > 0 for g in grads)  # every new parameter gets a gradient


class Saved(torch.autograd.graph.saved_tensors_hooks):
    """Bytes of the tensors autograd saves for backward outside checkpointed regions (checkpoint keeps its
    own), each storage once."""

    def __init__(self):
        self.storages = {}

        def pack(t):
            self.storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        super().__init__(pack, lambda t: t)

    @property
    def bytes(self):
        return sum(self.storages.values())


def test_streamed_keeps_no_mixer_activations_and_replays_one_mixer_at_a_time():
    teacher, student, ids, mask = setup("llama", "none", layers=4)
    mixers = student.mixers()
    saved = {}
    for mode in ("whole", "streamed"):
        hook = Saved()
        with hook:
            loss, _ = transfer_loss(student, teacher, ids, attention_mask=mask, mode=mode)
        saved[mode] = hook.bytes
    # Whole keeps every mixer's activations for backward; streamed none (its layer inputs live in checkpoints).
    assert saved["streamed"] < saved["whole"] / 20, saved

    events = []
    for i, mixer in mixers.items():
        mixer.register_forward_hook(lambda m, a, o, i=i: events.append(("forward", i)))
        for name, p in mixer.named_parameters():
            if p.requires_grad:
                p.register_hook(lambda g, i=i: events.append(("grad", i)))
    loss, _ = transfer_loss(student, teacher, ids, attention_mask=mask, mode="streamed")
    assert events == [("forward", i) for i in mixers]
    events.clear()
    loss.backward()
    # Backward: the last layer's mixer is recomputed and all its gradients made before the next one is touched.
    order = [i for i in sorted(mixers, reverse=True)]
    n_trained = {i: sum(p.requires_grad for p in m.parameters()) for i, m in mixers.items()}
    assert events == [e for i in order for e in [("forward", i)] + [("grad", i)] * n_trained[i]]


def test_streamed_walk_stops_at_the_last_converted_layer():
    teacher, student, ids, mask = setup("qwen3", "2")  # layer 2 (the last) kept: the walk needs layers 0 and 1
    ran = []
    for i, layer in enumerate(teacher.model.layers):
        layer.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
    teacher.lm_head.register_forward_hook(lambda m, a, o: ran.append("head"))
    transfer_loss(student, teacher, ids, attention_mask=mask, mode="streamed")
    assert ran == [0, 1]
    ran.clear()
    transfer_loss(student, teacher, ids, attention_mask=mask, mode="whole")
    assert ran == [0, 1, 2, "head"]


def test_trainer_runs_either_mode_to_the_same_weights_and_refuses_others(tmp_path):
    blocks = torch.randint(3, 128, (8, 16), generator=torch.Generator().manual_seed(0))
    results = {}
    for mode in ("whole", "streamed"):
        teacher, student, _, _ = setup("llama", "none")
        cfg = TrainConfig(
            stage="transfer",
            tokens=4 * 2 * 16,
            seq_len=16,
            batch_size=2,
            lr=1e-2,
            transfer_mode=mode,
            save_every=0,
            save_minutes=0,
        )
        trained, _, history = train(student, teacher, blocks, cfg, tmp_path / mode, progress=False)
        results[mode] = trained.state_dict(), [h["loss"] for h in history]
    (streamed, s_losses), (whole, w_losses) = results["streamed"], results["whole"]
    assert s_losses == pytest.approx(w_losses, rel=1e-5)
    for k in whole:
        torch.testing.assert_close(streamed[k], whole[k], rtol=1e-5, atol=1e-6)
    assert TransferObjective(student, teacher).mode == "streamed"  # the default
    with pytest.raises(ValueError, match="unknown transfer mode 'layered': choose one of streamed, whole"):
        TrainConfig(stage="transfer", tokens=64, seq_len=16, transfer_mode="layered")
