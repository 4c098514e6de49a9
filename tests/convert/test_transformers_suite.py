"""transformers' own common model tests (``ModelTesterMixin``, ``ConfigTester``) on our converted model classes, wired
as transformers' tests/models/llama/test_modeling_llama.py wires Llama in, beside the same harness on the plain base.

Each suite converts a 2-layer tiny Llama shaped like a Hub checkpoint (tests/hub_configs.py: llama-3.2, fields kept as
shipped) with ``convert(base, target, keep_attention="0", ...)``: layer 0 keeps softmax attention, layer 1 becomes
the target's mixer. The mixin rebuilds models from the converted ``LinearizedConfig`` (``model_class(config)``),
which carries the base's config and the per-layer mixer settings. The suites: LoLCATs with window 2, one sink and
decay 16 (so the linear state, not only the window, is exercised at the suite's 8-token sequences), LoLCATs with its
default window (64: all softmax at these lengths), Mamba-2 and Gated DeltaNet; and the control, the same tester and
inputs on the unconverted base (``LlamaModel`` / ``LlamaForCausalLM``, ``LlamaConfig``), for side-by-side counts.

The test files are not in transformers' wheel and are not copied here: the top-level ``tests/*.py`` of the sdist
of the *installed* transformers are fetched by pip into a cache outside the repo (scripts/fetch_transformers_tests.py;
scripts/setup.sh runs it up front, this module on first use) and imported as the package ``transformers_tests``.
The sdist lacks some files those import, so stubs stand in (registered in ``sys.modules``):

- ``tests/generation/test_utils.py`` (``GenerationTesterMixin``): an empty class, so no generation tests run here.
  Generation is covered by our own tests: tests/convert/test_convert.py's
  ``test_cached_decode_matches_full_forward``, ``test_beam_search_through_the_cache_equals_beam_search_without_it``,
  ``test_decode_follows_feature_map_weights_changed_after_a_decode``,
  ``test_plain_lolcats_generate_with_a_padded_mask_matches_the_forward`` and
  ``test_generate_logits_match_cache_free_forward``; and tests/mixers/test_continue.py's
  ``test_generation_continues_from_its_returned_cache``.
- ``tests/exporters/test_export.py`` (``ExportTesterMixin``): an empty class, so torch.export is not tested here.
- ``tests/utils/test_configuration_utils.py`` (``config_common_kwargs``): an empty dict, so
  ``ConfigTester.check_config_arguments_init`` builds the config without arguments and compares no values.
- ``tests/causal_lm_tester.py`` (``CausalLMModelTester``/``CausalLMModelTest``, what test_modeling_llama.py builds
  on): not needed; the tester below is ours. ``tests/distributed_testing_utils.py``: only the FSDP / tensor- and
  expert-parallel mixins import it, and they are not used.
- ``tests/__init__.py``: the fetch writes an empty one (test_configuration_common.py executes its package's).

Skips are the tests that assume softmax attention in every layer, or what a recurrence cannot do by construction;
each says why (as transformers' tests/models/mamba2 and qwen3_next do). Failures that are defects of the model are
left to fail.
"""

import copy
import importlib
import importlib.util
import inspect
import re
import sys
import types
import unittest
import warnings
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

from linearize.convert.configuration_linearized import MIRRORED, LinearizedConfig
from linearize.convert.convert import convert
from linearize.convert.modeling_linearized import LinearizedForCausalLM, LinearizedModel

from helpers import tiny_base

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "transformers_tests"
# Modules the sdist's tests import but does not ship: module -> the names it must define.
STUBS = {
    "exporters.test_export": {"ExportTesterMixin": type("ExportTesterMixin", (), {})},
    "generation.test_utils": {"GenerationTesterMixin": type("GenerationTesterMixin", (), {})},
    "utils.test_configuration_utils": {"config_common_kwargs": {}},
}


def load_transformers_tests():
    """Import the installed transformers' common tests (fetched on first use) with the stubs in place; None, or a line
    saying why they could not be had."""
    script = ROOT / "scripts" / "fetch_transformers_tests.py"
    spec = importlib.util.spec_from_file_location("fetch_transformers_tests", script)
    fetcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetcher)
    try:
        folder = fetcher.fetch()
    except fetcher.FetchError as e:
        return str(e)
    spec = importlib.util.spec_from_file_location(
        PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    for dotted, names in STUBS.items():
        parent = PACKAGE
        for part in dotted.split("."):
            name = f"{parent}.{part}"
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                setattr(sys.modules[parent], part, sys.modules[name])
            parent = name
        vars(sys.modules[parent]).update(names)
    try:
        with warnings.catch_warnings():  # their marks (flash_attn_test, ...) are registered by transformers' conftest
            warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
            for module in ("test_modeling_common", "test_configuration_common"):
                importlib.import_module(f"{PACKAGE}.{module}")
    except ImportError as e:  # a newer sdist importing a file it lacks, for which there is no stub yet
        return f"transformers' common tests in {folder} do not import: {e}"
    return None


# A failure to get them is one failing test (below) and the suites skip, rather than a collection error, which would
# stop the whole run.
FETCH_ERROR = load_transformers_tests()
if not FETCH_ERROR:
    import transformers_tests.test_modeling_common as common
    from transformers_tests.test_configuration_common import ConfigTester
    from transformers_tests.test_modeling_common import ModelTesterMixin, ids_tensor

    # The mixin tells a base model (no loss: not trained, given no labels) from a causal LM (given labels) by
    # transformers' own tables of model names, which no model outside it is in: ours join the mixin's copies only.
    common.MODEL_MAPPING_NAMES = {**common.MODEL_MAPPING_NAMES, "linearized": "LinearizedModel"}
    common.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES = {
        **common.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        "linearized": "LinearizedForCausalLM",
    }
else:
    ModelTesterMixin = object


def test_transformers_common_tests_are_fetched():
    if FETCH_ERROR:
        pytest.fail(FETCH_ERROR, pytrace=False)


BATCH, SEQ = 3, 8
LENGTHS = (SEQ - 3, SEQ, 2)  # right padding of two lengths beside a full row: row 0 (batching_equivalence's) padded


@lru_cache
def converted_config(target, **settings):
    """The LinearizedConfig of the tiny Llama converted to ``target`` with layer 0 kept (None: the base's config)."""
    base = tiny_base("llama", layers=2)
    if target is None:
        return base.config
    return convert(base, target, keep_attention="0", **settings).config


class LinearizedModelTester:
    """What ModelTesterMixin asks its ``model_tester`` for: sizes, and a config with inputs (ids and a padding mask)."""

    def __init__(self, parent, target, settings):
        self.parent = parent
        self.config = converted_config(target, **settings)
        self.batch_size, self.seq_length, self.is_training = BATCH, SEQ, True
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            setattr(self, name, getattr(self.config, name))

    def get_config(self):
        config = copy.deepcopy(self.config)
        config._attn_implementation = None  # as a checkpoint's config.json gives it: the model picks one when built
        return config

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = (torch.arange(self.seq_length)[None] < torch.tensor(LENGTHS)[:, None]).long()
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


def config_kwargs(config):
    """The converted config as keyword arguments, as a user would pass them: base_config and mixers, and the base's
    fields that LinearizedConfig keeps at the top level."""
    if isinstance(config, LlamaConfig):
        sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
        return {k: getattr(config, k) for k in (*sizes, "head_dim")}
    kwargs = {k: v for k, v in vars(config).items() if k in MIRRORED}  # not getattr: per-layer fields raise
    return {"base_config": dict(config.base_config), "mixers": list(config.mixers), **kwargs}


# ConfigTester's checks, one test each, so one failing check does not hide the rest (run_common_tests runs them in
# turn and stops at the first).
CONFIG_CHECKS = (
    "create_and_test_config_common_properties",
    "create_and_test_config_to_json_string",
    "create_and_test_config_to_json_file",
    "create_and_test_config_from_and_save_pretrained",
    "create_and_test_config_from_and_save_pretrained_subfolder",
    "create_and_test_config_from_and_save_pretrained_composite",
    "create_and_test_config_with_num_labels",
    "check_config_arguments_init",
    "create_and_test_config_from_pretrained_custom_kwargs",
    "check_config_can_be_init_without_params",
)


class Suite(ModelTesterMixin):
    """The common wiring; not a TestCase, so only the subclasses below run."""

    target, settings = None, {}
    config_class = LinearizedConfig
    all_model_classes = (LinearizedModel, LinearizedForCausalLM)

    def setUp(self):
        if FETCH_ERROR:
            self.skipTest("transformers' common tests could not be had: test_transformers_common_tests_are_fetched")
        self.model_tester = LinearizedModelTester(self, self.target, self.settings)
        self.config_tester = ConfigTester(
            self, config_class=self.config_class, **config_kwargs(self.model_tester.config)
        )

    def test_generation_tester_mixin_inheritance(self):
        self.skipTest("GenerationTesterMixin is not in transformers' sdist (see the module docstring)")


for check in CONFIG_CHECKS:
    name = check.removeprefix("create_and_test_config_").removeprefix("check_config_")
    setattr(Suite, f"test_config_{name}", lambda self, check=check: getattr(self.config_tester, check)())


def test_config_checks_are_all_run():
    """CONFIG_CHECKS is every check ConfigTester.run_common_tests runs: one a newer transformers adds is not missed."""
    if FETCH_ERROR:
        pytest.skip("transformers' common tests could not be had: test_transformers_common_tests_are_fetched")
    run = inspect.getsource(ConfigTester.run_common_tests)
    assert set(re.findall(r"self\.(\w+)\(", run)) == set(CONFIG_CHECKS)


class HybridSuite(Suite):
    """The converted models: what a recurrence cannot do by construction is skipped, saying why."""

    @unittest.skip(
        reason="expects one attention map per layer (num_hidden_layers); a converted layer computes no attention "
        "matrix (transformers' qwen3_next test counts only the full-attention layers' maps instead)"
    )
    def test_attention_outputs(self):
        pass


class WindowedSuite(HybridSuite):
    """LoLCATs: each converted layer's window is a per-layer cache setting (``per_layer_config``), which makes the
    config heterogeneous."""

    GLOBAL_WINDOW_TESTS = ("test_eager_matches_sdpa_inference", "test_sliding_window_mask")

    def setUp(self):
        super().setUp()
        if self._testMethodName.startswith(self.GLOBAL_WINDOW_TESTS):
            self.skipTest(
                "reads config.sliding_window globally (hasattr), which transformers makes raise "
                "AmbiguousGlobalPerLayerAttributeError, by design, where the window is a per-layer attribute, as in a "
                "hybrid whose converted layers have windows; the kept layer's eager/SDPA parity runs in "
                "MambaHybridTest and GDNHybridTest"
            )


class LlamaControlTest(Suite, unittest.TestCase):
    """The same harness on the plain tiny base: the reference counts."""

    config_class = LlamaConfig
    all_model_classes = (LlamaModel, LlamaForCausalLM)


class LoLCATsWindow2Test(WindowedSuite, unittest.TestCase):
    target, settings = "lolcats", {"window": 2, "sinks": 1, "decay": 16}


class LoLCATsDefaultWindowTest(WindowedSuite, unittest.TestCase):
    target = "lolcats"


class MambaHybridTest(HybridSuite, unittest.TestCase):
    target = "mamba"


class GDNHybridTest(HybridSuite, unittest.TestCase):
    target = "gdn"
