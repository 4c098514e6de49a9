"""Conversion builds the converted model on the meta device: it equals the eagerly built one bit for bit
(every target, every family, all layers converted and hybrid), shares or copies the base's storage as
asked, and draws its new parameters from its own seed."""

import pytest
import torch

import linearize.convert.auto  # noqa: F401  (registers the Auto classes)
from linearize.convert.calibration import fresh_mixer
from linearize.convert.convert import build, convert, new_parameter_names
from linearize.convert.targets import MIXERS

from helpers import tiny_base, tiny_settings

TARGETS = list(MIXERS)
IDS = torch.randint(3, 128, (2, 23), generator=torch.Generator().manual_seed(5))


def tensors(model):
    """Every parameter and buffer by name, non-persistent buffers (rotary) included."""
    return {**dict(model.named_parameters(remove_duplicate=False)), **dict(model.named_buffers(remove_duplicate=False))}


def assert_identical(meta, eager):
    a, b = tensors(meta), tensors(eager)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].device == b[name].device, name
        assert torch.equal(a[name], b[name]), name
    assert meta.state_dict().keys() == eager.state_dict().keys()
    tied = eager.lm_head.weight is eager.model.embed_tokens.weight
    assert (meta.lm_head.weight is meta.model.embed_tokens.weight) == tied
    assert meta.training == eager.training
    with torch.no_grad():
        assert torch.equal(meta(IDS).logits, eager(IDS).logits)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("keep", [None, "1"])
def test_meta_build_equals_eager_build(family, target, keep):
    """The meta build (sharing the base's storage, or copying it) == the reference eager build, bit for bit:
    every tensor (buffers too), the tie of the embeddings, the logits."""
    base = tiny_base(family)
    model = convert(base, target, keep_attention=keep, **tiny_settings(base, target))
    assert model.mixers() and (keep is None or 1 not in model.mixers())
    eager = build(model.config, base, meta=False)
    assert_identical(model, eager)
    assert_identical(build(model.config, base, copy=False), eager)


@pytest.mark.parametrize("target", ["lolcats", "mamba", "gdn"])
def test_meta_build_equals_eager_build_in_bf16(target):
    base = tiny_base("qwen3").to(torch.bfloat16)
    model = convert(base, target, keep_attention="0")
    assert model.dtype == torch.bfloat16
    assert_identical(model, build(model.config, base, meta=False))


def storages(model):
    return {t.untyped_storage().data_ptr() for t in tensors(model).values()}


@pytest.mark.parametrize("target", ["lolcats", "mamba"])
def test_copy_false_shares_the_base_storage_copy_true_does_not(target):
    base = tiny_base("llama")
    shared = convert(base, target, keep_attention="0", copy=False)
    copied = convert(base, target, keep_attention="0")
    base_ptrs = {t.untyped_storage().data_ptr() for t in base.state_dict().values()}
    new = new_parameter_names(shared)
    sd = shared.state_dict()
    # copy=False: every base tensor is the base's own storage; only the new parameters are new memory.
    for name, t in base.state_dict().items():
        assert sd[name].data_ptr() == t.data_ptr(), name
    assert {n for n, t in sd.items() if t.untyped_storage().data_ptr() not in base_ptrs} == new
    # copy=True: nothing shared, and changing the converted model leaves the base as it was.
    assert not storages(copied) & base_ptrs
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with torch.no_grad():
        for p in copied.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    # The tie survives: one embedding tensor, held once (not one clone per name).
    assert copied.lm_head.weight is copied.model.embed_tokens.weight


def test_new_parameters_come_from_the_seed_and_leave_the_callers_random_state():
    base = tiny_base("mistral")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = convert(base, "mamba")
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(7)  # whatever the caller drew before
    b = convert(base, "mamba")
    c = convert(base, "mamba", seed=1)
    z = "model.layers.0.self_attn.z_proj.weight"
    assert torch.equal(a.state_dict()[z], b.state_dict()[z])
    assert not torch.equal(a.state_dict()[z], c.state_dict()[z])


@pytest.mark.parametrize("target", TARGETS)
def test_every_new_parameter_has_an_init(target):
    """Mixers are built on the meta device and their new parameters materialised as NaN: each must be set
    by a reset_linearize_parameters (else NaN would reach the model)."""
    base = tiny_base("qwen3")
    attn = base.model.layers[1].self_attn
    kw = {"mamba_heads": [0, 3]} if target == "recurformer" else {}
    mixer = fresh_mixer(MIXERS[target], attn, base.config, 1, **kw)
    for name, p in mixer.named_parameters():
        assert torch.isfinite(p).all(), name
    assert mixer.q_proj is attn.q_proj and mixer.k_norm is attn.k_norm


def test_from_attention_builds_no_projections(monkeypatch):
    """The family attention the mixer sizes itself from is built on the meta device, never in memory."""
    import torch.nn as nn

    base = tiny_base("llama")
    attn = base.model.layers[0].self_attn
    built = []
    init = nn.Linear.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self.weight.device.type)

    monkeypatch.setattr(nn.Linear, "__init__", spy)
    MIXERS["mamba"].from_attention(attn, base.config, 0)
    assert built and set(built) == {"meta"}


@pytest.mark.parametrize("target", ["lolcats", "gdn"])
def test_shared_conversion_saves_and_loads(tmp_path, target):
    """What `linearize convert` does with the base's own storage (copy=False): the checkpoint it writes loads
    back to the same tensors and logits."""
    from linearize.convert.auto import LinearizedForCausalLM
    from linearize.convert.save import save_atomic

    base = tiny_base("qwen2")
    model = convert(base, target, keep_attention="-1", copy=False)
    save_atomic(model, None, tmp_path / "m")
    loaded = LinearizedForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert_identical(loaded, model)
