"""Conversion: swap the planned attention modules of a base model for mixers built from their weights."""

import inspect

import torch

from linearize.convert.auto import LinearizedForCausalLM  # registers the Auto classes too
from linearize.convert.calibration import (
    DEFAULT_THRESHOLD,
    DEFAULT_WINDOW,
    calibration_ids,
    fresh_mixer,
    head_recency,
    layer_kl,
    rank_by_kl,
    retrieval_probes,
)
from linearize.convert.configuration_linearized import LinearizedConfig
from linearize.convert.families import check_family, family
from linearize.convert.linear_mixer import SPARSE_SELECT
from linearize.convert.plan import PlanError, auto_count, parse_keep_attention
from linearize.convert.settings import RANKINGS
from linearize.convert.targets import MIXERS
from linearize.errors import LinearizeError, SettingError
from linearize.kernels.window_attn.sparse import SELECTIONS

PROBE_DISTRACTORS = 3  # kl-multikey: facts about other things beside the asked one (RULER's multi-key NIAH has 3)
KL_SAMPLES = (4, 512)  # calibration windows for rank_by="kl": long enough to need more than the window


class UnknownTargetError(LinearizeError):
    pass


def check_target(target):
    if target not in MIXERS:
        raise UnknownTargetError(f"unknown target {target!r}: choose one of {', '.join(MIXERS)}")


def check_settings(target, settings):
    """Refuse, in one line, a per-mixer setting the target's mixer does not take: a flag is never dropped silently
    (RecurFormer's plan builds its layers' settings itself, so it takes none)."""
    takes = () if target == "recurformer" else inspect.signature(MIXERS[target].__init__).parameters
    unknown = [f"--{name.replace('_', '-')}" for name in settings if name not in takes]
    if unknown:
        raise SettingError(f"{', '.join(unknown)} does not apply to --to {target}")


def versions():
    import importlib.metadata

    import transformers

    return {
        "linearize": importlib.metadata.version("linearize"),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


def convert(
    base,
    target,
    keep_attention=None,
    base_name=None,
    tokenizer=None,
    calibration=None,
    recency_window=DEFAULT_WINDOW,
    recency_threshold=DEFAULT_THRESHOLD,
    recency_fraction=None,
    rank_by="recency",
    copy=True,
    seed=0,
    **mixer_settings,
):
    """Return a ``LinearizedForCausalLM`` made from ``base`` (a loaded HF causal LM).

    target: one of ``MIXERS``; keep_attention: a plan spec (see ``convert.plan``); mixer_settings:
    per-mixer overrides such as ``feature_dim`` or ``window``. Every tensor of the base is reused by
    name; only the mixers' new parameters are freshly initialised.

    ``recurformer`` and ``auto:N`` plans measure head recency on calibration text: ``calibration``
    token ids [N, T], or the offline default texts through ``tokenizer``. RecurFormer converts the heads
    whose recency is at least ``recency_threshold``, or, with ``recency_fraction``, that share of all
    heads, most local first. The numbers are saved in ``config.linearize["plan_evidence"]``.

    ``rank_by="kl"`` ranks layers for ``auto:N`` by measured quality instead: the KL from the base of
    the base with only that layer converted (fresh mixer), on longer calibration windows (``layer_kl``).

    The converted model is built on the meta device and takes the base's tensors (``build``): with
    ``copy=True`` (the default) copies of them, so the base stays an independent model (a teacher);
    with ``copy=False`` the base's own storage, so conversion costs no second copy of the weights, but
    the base must not be used afterwards: training or merging into the converted model would change it.
    The new parameters are initialised from ``seed`` (the caller's random state is left as it was), so
    the same base and settings give the same model.
    """
    check_target(target)
    check_settings(target, mixer_settings)
    if mixer_settings.get("sparse_cache") and not mixer_settings.get("sparse_select"):
        mixer_settings["sparse_select"] = SPARSE_SELECT  # recorded, so a later default does not change this model
    check_family(base.config.model_type)
    for name, value in (("--recency-threshold", recency_threshold), ("--recency-fraction", recency_fraction)):
        if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise PlanError(f"bad {name} {value!r}: a number from 0 to 1")
    if not (isinstance(recency_window, int) and recency_window >= 1):
        raise PlanError(f"bad --recency-window {recency_window!r}: a whole number of tokens >= 1")
    if rank_by not in RANKINGS:
        raise PlanError(f"bad --rank-by {rank_by!r}: choose one of {', '.join(RANKINGS)}")
    num_layers = base.config.num_hidden_layers
    evidence, recency = None, None
    n_auto = auto_count(keep_attention, num_layers)
    if n_auto is not None and rank_by.startswith("kl") and target != "recurformer":
        if calibration is None and tokenizer is None:
            raise PlanError(
                f"keep_attention={keep_attention!r} ranked by KL needs calibration text: pass "
                "tokenizer= (default texts) or calibration= (token ids)"
            )
        cls = MIXERS[target]

        def measure(ids, positions=None):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                fresh = lambda attn, i: fresh_mixer(cls, attn, base.config, i, **mixer_settings)  # noqa: E731
                return layer_kl(base, ids, fresh, positions=positions)

        evidence = {"method": "kl", "ranked_by": rank_by}
        if rank_by in ("kl", "kl-mix"):  # prose: the KL over every token
            if calibration is None:
                calibration = calibration_ids(tokenizer, num_samples=KL_SAMPLES[0], seq_len=KL_SAMPLES[1])
            kl = evidence["kl_prose"] = measure(calibration)
            evidence["samples"] = list(calibration.shape)
        if rank_by in ("kl-recall", "kl-multikey", "kl-mix"):  # retrieval probes: the KL at the answer's tokens
            if tokenizer is None:
                raise PlanError(f"--rank-by {rank_by} builds retrieval probes: pass tokenizer=")
            probes, answer = retrieval_probes(
                tokenizer,
                num_samples=KL_SAMPLES[0],
                seq_len=KL_SAMPLES[1],
                distractors=PROBE_DISTRACTORS if rank_by == "kl-multikey" else 0,
            )
            kl = evidence["kl_recall"] = measure(probes, answer)
            evidence["samples"] = list(probes.shape)
        if rank_by == "kl-mix":  # each ranking's share of its total, added: prose and retrieval count alike
            kl = evidence["kl_prose"] / evidence["kl_prose"].sum() + evidence["kl_recall"] / evidence["kl_recall"].sum()
        kept = rank_by_kl(kl, n_auto)
        for key in ("kl_prose", "kl_recall"):
            if key in evidence:
                evidence[key] = [round(x, 5) for x in evidence[key].tolist()]
        evidence["kl"] = [round(x, 5) for x in kl.tolist()]
    elif target == "recurformer" or n_auto is not None:
        if calibration is None:
            if tokenizer is None:
                raise PlanError(
                    f"{target!r} with keep_attention={keep_attention!r} measures attention on calibration "
                    "text: pass tokenizer= (default texts) or calibration= (token ids)"
                )
            calibration = calibration_ids(tokenizer)
        recency = head_recency(base, calibration, recency_window)
        evidence = {
            "method": "attention recency",
            "window": recency_window,
            "samples": list(calibration.shape),
            "recency": [[round(r, 4) for r in row] for row in recency.tolist()],
        }
    if evidence is None or evidence["method"] != "kl":
        kept = parse_keep_attention(keep_attention, num_layers, recency)
    if target == "recurformer":
        if recency_fraction is not None:
            # The threshold that selects that share of heads (ties may add a few).
            count = round(recency_fraction * recency.numel())
            recency_threshold = recency.flatten().sort(descending=True).values[count - 1].item() if count else 2.0
            evidence["fraction"] = recency_fraction
        evidence["threshold"] = round(recency_threshold, 4)
        mixers = []
        for i in range(num_layers):
            heads = [h for h, r in enumerate(recency[i].tolist()) if r >= recency_threshold]
            mixers.append(None if i in kept or not heads else {"target": target, "mamba_heads": heads})
    else:
        with torch.device("meta"):  # only for its settings (and to check them): nothing allocated
            template = MIXERS[target](base.config, 0, **mixer_settings)
        mixers = [None if i in kept else template.settings() for i in range(num_layers)]
    if evidence is not None:
        evidence["kept_layers"] = kept
    config = LinearizedConfig(
        base_config=base.config.to_dict(),
        mixers=mixers,
        linearize={
            "base": base_name or getattr(base.config, "_name_or_path", None),
            "target": target,
            "keep_attention": kept,
            "keep_attention_spec": None if keep_attention is None else str(keep_attention),
            "versions": versions(),
            "history": [{"step": "convert", "target": target}],
            "plan_evidence": evidence,
        },
    )
    config._attn_implementation = base.config._attn_implementation
    return build(config, base, copy=copy, seed=seed)


def sparse_cache_layers(model, budget):
    """{layer index: mixer} of the converted layers that take LoLA's sparse cache (a softmax window sharing the linear
    part's normaliser); a SettingError where none does or ``budget`` is not a whole number >= 0."""
    mixers = {i: m for i, m in model.mixers().items() if getattr(m, "shared_window", False)}
    if not mixers:
        raise SettingError(
            "--sparse-cache needs converted layers with a softmax window sharing the linear part's normaliser "
            "(lolcats); this model has none"
        )
    if isinstance(budget, bool) or not (isinstance(budget, int) and budget >= 0):
        raise SettingError(f"bad --sparse-cache {budget!r}: a whole number of keys per head >= 0")
    return mixers


def set_sparse_cache(model, budget, select=None):
    """Give every converted layer whose window shares the linear part's normaliser LoLA's sparse cache of ``budget``
    keys per key/value head (0: none), chosen by ``select`` (``kernels.window_attn.sparse.SELECTIONS``; None: the
    layers' own), in place: training-free, so a trained model takes it as it is. The config records both (mixer
    settings, cache layers), so a saved model loads with them. Returns the model."""
    if select is not None and select not in SELECTIONS:
        raise SettingError(f"bad --sparse-select {select!r}: one of {', '.join(SELECTIONS)}")
    for i, mixer in sparse_cache_layers(model, budget).items():
        mixer.sparse_select = select or (mixer.sparse_select if mixer.sparse_cache else SPARSE_SELECT)
        mixer.sparse_cache = budget
        model.config.mixers[i] = mixer.settings()
    model.config.record_cache_layers({i: m.cache_layout() for i, m in model.mixers().items()})
    step = {"step": "sparse_cache", "budget": budget}
    if select is not None:
        step["select"] = select
    model.config.linearize.setdefault("history", []).append(step)
    return model


def new_parameter_names(model):
    """Full names of the parameters the conversion added (the mixers' new parameters)."""
    return {f"model.layers.{i}.self_attn.{n}" for i, m in model.mixers().items() for n in m.new_parameter_names()}


def check_mapping(model, base_names):
    """Every tensor of the converted model is a base tensor of the same name or a new parameter, and every base
    tensor has a place: else a RuntimeError naming a few of the odd ones out."""
    names = set(model.state_dict())
    missing, unexpected = names - set(base_names), set(base_names) - names
    if unexpected or missing - new_parameter_names(model):
        raise RuntimeError(
            f"weights did not map onto the converted model: missing "
            f"{sorted(missing - new_parameter_names(model))[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


@torch.no_grad()
def init_new_parameters(model, seed=0, init_on=None):
    """Initialise the mixers' new parameters from ``seed``, layer by layer (each mixer's own init, children
    first), on a forked random state: the same values whatever was drawn before, and nothing drawn after moves.
    ``init_on``: see ``Mixer.init_new_parameters``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _, mixer in sorted(model.mixers().items()):
            mixer.init_new_parameters(init_on=init_on)


def build(config, base, copy=True, seed=0, meta=True):
    """The ``LinearizedForCausalLM`` of ``config`` holding ``base``'s tensors (by name) and new parameters
    initialised from ``seed``, in the base's dtype, on its device, in eval mode.

    meta=True: built on the meta device, so nothing is allocated that is thrown away: the base's tensors are
    put in place as they are (``copy=False``: the base's own storage, shared from now on) or as one clone each
    (``copy=True``); the new parameters get memory where the base is, in its dtype, and are initialised on the
    CPU in the default dtype (as the eager build does) a layer at a time and copied in; the rotary embedding
    (whose buffers are not saved) is rebuilt. Peak memory: the base, the new parameters, one layer's new
    parameters in the default dtype (and, with ``copy=True``, the clones).

    meta=False: the reference the meta build is tested against (tests/test_meta_convert.py), which it
    equals bit for bit: the whole model allocated and initialised by transformers, the base's tensors
    copied in, the new parameters initialised from ``seed``. About twice the base's memory at the peak.
    """
    base_state = base.state_dict()
    if not meta:
        model = LinearizedForCausalLM(config)
        check_mapping(model, base_state)
        model.load_state_dict(base_state, strict=False)
        init_new_parameters(model, seed)
        return in_dtype(model, base.dtype)
    with torch.device("meta"):
        model = LinearizedForCausalLM(config)
    check_mapping(model, base_state)
    device = next(iter(base_state.values())).device
    tied = set(model.all_tied_weights_keys)  # given their source's tensor by tie_weights below
    clones = {}

    def take(t):
        if not copy:
            return t
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride(), t.dtype)
        if key not in clones:  # tensors that alias in the base alias in the copy
            clones[key] = t.clone()
        return clones[key]

    model.load_state_dict({k: take(v) for k, v in base_state.items() if k not in tied}, strict=False, assign=True)
    del base_state
    clones.clear()  # the copies now belong to the model
    model.tie_weights()
    # The new parameters: their memory on the base's device in its dtype, all of it first; then each is
    # initialised on the CPU in the default dtype (as the eager build does) and copied in, a layer at a time.
    for _, mixer in model.mixers().items():
        mixer.materialize_new_parameters(device, dtype=base.dtype)
    init_new_parameters(model, seed, init_on="cpu")
    inner = model.model
    inner.rotary_emb = family(inner.base_config.model_type).rotary(config=inner.base_config)  # its buffers, computed
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"converted model built on the meta device has tensors left there: {left[:5]}")
    return in_dtype(model.to(device), base.dtype)


def in_dtype(model, dtype):
    """``model`` in eval mode with its parameters in ``dtype``; its buffers (the rotary inverse frequencies)
    stay in fp32, as from_pretrained keeps them: in bf16 their rounding would shift rotary angles by about
    position x 2e-3 rad, so a trained model and its reload would disagree."""
    for p in model.parameters():
        p.data = p.data.to(dtype)
    return model.eval()


def new_parameter_count(model):
    return sum(
        p.numel() for m in model.mixers().values() for n, p in m.named_parameters() if n in set(m.new_parameter_names())
    )
