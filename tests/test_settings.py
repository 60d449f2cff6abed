"""Every named setting has one list of allowed values (tctseg.settings); the config validates
against it and each owner acts on exactly those values — no more, no fewer."""

import math

import pytest
import torch

from tctseg import settings
from tctseg.config import config_from_dict
from tctseg.errors import ConfigError

BASE = {
    "classes": ["liver", "spleen"],
    "datasets": [{"name": "a", "format": "msd", "path": "x", "classes": ["liver"]}],
}


def test_every_dataset_format_has_a_converter_and_no_converter_is_unlisted():
    from tctseg.data.conversion import CONVERTERS

    assert tuple(CONVERTERS) == settings.DATASET_FORMATS


def test_every_augment_preset_exists_and_no_preset_is_unlisted():
    from tctseg.data.augment import AUGMENT_PRESETS

    assert tuple(AUGMENT_PRESETS) == settings.AUGMENT_PRESETS


@pytest.mark.parametrize("schedule", settings.SCHEDULES)
def test_every_schedule_gives_a_learning_rate(schedule):
    from tctseg.training.trainer import learning_rate

    rates = [learning_rate(schedule, 1e-3, epoch, 10) for epoch in range(10)]
    assert all(math.isfinite(r) and 0 < r <= 1e-3 for r in rates)


def test_an_unlisted_schedule_or_optimizer_is_refused_by_the_trainer():
    from tctseg.training.trainer import build_optimizer, learning_rate

    with pytest.raises(ConfigError, match="train.schedule: 'step' is not one of constant, poly, cosine"):
        learning_rate("step", 1e-3, 0, 10)
    config = config_from_dict(BASE)
    config.train.optimizer = "lion"  # past the config's own check, as a library user might
    with pytest.raises(ConfigError, match="train.optimizer: 'lion' is not one of adam, adamw, sgd"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], config)


@pytest.mark.parametrize("optimizer", settings.OPTIMIZERS)
def test_every_optimizer_is_built(optimizer):
    from tctseg.training.trainer import build_optimizer

    config = config_from_dict(BASE, [f"train.optimizer={optimizer}"])
    built = build_optimizer([torch.nn.Parameter(torch.zeros(1))], config)
    assert isinstance(built, torch.optim.Optimizer)


@pytest.mark.parametrize("norm", settings.NORMS)
def test_every_norm_is_built(norm):
    from tctseg.network.unet import make_norm

    layer = make_norm(norm, 8)
    assert layer(torch.randn(2, 8, 4, 4, 4)).shape == (2, 8, 4, 4, 4)


def test_an_unlisted_norm_is_refused():
    from tctseg.network.unet import make_norm

    with pytest.raises(ValueError, match="layer"):
        make_norm("layer", 8)


@pytest.mark.parametrize("threshold", settings.THRESHOLDS)
@pytest.mark.parametrize("empty", settings.EMPTY_RULES)
def test_every_threshold_and_empty_rule_is_a_filter(threshold, empty):
    from tctseg.losses.consistency import consistency_terms

    probs = torch.softmax(torch.randn(2, 3, 4, 4, 4), dim=1)
    aux = torch.softmax(torch.randn(2, 2, 2, 4, 4, 4), dim=2)
    terms = consistency_terms(probs, aux, threshold=threshold, empty=empty)
    assert terms.keep.shape == (2, 2)


def test_an_unlisted_threshold_or_empty_rule_is_refused_by_the_filter():
    from tctseg.losses.consistency import consistency_terms

    probs = torch.softmax(torch.randn(1, 3, 4, 4, 4), dim=1)
    aux = torch.softmax(torch.randn(1, 2, 2, 4, 4, 4), dim=2)
    with pytest.raises(ValueError):
        consistency_terms(probs, aux, threshold="mode")
    with pytest.raises(ValueError):
        consistency_terms(probs, aux, empty="ignore")


@pytest.mark.parametrize("weighting", settings.WEIGHTINGS)
def test_every_weighting_builds_tct(weighting):
    from tctseg.methods import build_method

    config = config_from_dict(BASE, [f"method.weighting={weighting}", "network.width=4", "network.depth=2"])
    method = build_method(config)
    assert method.weighting == weighting


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("datasets.0.format", "nifti", settings.DATASET_FORMATS),
        ("datasets.0.role", "holdout", settings.DATASET_ROLES),
        ("datasets.0.modality", "PET", settings.MODALITIES),
        ("train.amp", "fp8", settings.AMP_MODES),
        ("train.schedule", "step", settings.SCHEDULES),
        ("train.optimizer", "lion", settings.OPTIMIZERS),
        ("train.augment_preset", "heavy", settings.AUGMENT_PRESETS),
        ("network.norm", "layer", settings.NORMS),
        ("method.empty_classes", "ignore", settings.EMPTY_RULES),
        ("method.weighting", "gradnorm", settings.WEIGHTINGS),
    ],
)
def test_the_config_refuses_an_unlisted_value_and_names_the_allowed_ones(key, value, allowed):
    with pytest.raises(ConfigError, match=f"{key}: '{value}' is not one of {', '.join(allowed)}"):
        config_from_dict(BASE, [f"{key}={value}"])
    for good in allowed:
        config_from_dict(BASE, [f"{key}='{good}'"])


def test_an_unquoted_yaml_off_names_the_quoting():
    with pytest.raises(ConfigError, match="train.amp: expected a string, got False .*write it in quotes, e.g. 'off'"):
        config_from_dict(BASE, ["train.amp=off"])
    assert config_from_dict(BASE, ["train.amp='off'"]).train.amp == "off"


@pytest.mark.parametrize("patch", [[96, 96], [96, 96, 0], [96, 96, 32.5], [96, -1, 32]])
def test_one_patch_rule_for_the_config_and_the_sampler(patch):
    from tctseg.data.sampler import PatchSampler

    with pytest.raises(ConfigError, match="train.patch_size: expected three positive integers"):
        settings.check_patch_size("train.patch_size", patch)
    with pytest.raises(ConfigError, match=r"train.patch_size(\.\d)?: expected"):  # typed parsing may answer first
        config_from_dict(BASE, [f"train.patch_size={patch}"])
    with pytest.raises(ConfigError, match="train.patch_size: expected three positive integers"):
        PatchSampler([object()], 2, patch)  # the rule is checked before any case is looked at
    assert settings.check_patch_size("train.patch_size", [96, 96, 32]) == (96, 96, 32)


def _option_keys_read_by(module) -> set[str]:
    """The ``method.options`` keys a method module reads: ``options.get("key")``, ``option(options,
    "key", ...)``, the fields of a ``read_options(Dataclass, ...)``, and the text-embedding keys."""
    import dataclasses
    import inspect
    import re

    from tctseg.methods import text_embeddings

    source = inspect.getsource(module)
    keys = set(re.findall(r'options\.get\("(\w+)"', source)) | set(re.findall(r'option\(options, "(\w+)"', source))
    for name in re.findall(r"read_options\((\w+),", source):
        keys |= {f.name for f in dataclasses.fields(getattr(module, name))}
    if module is not text_embeddings and "text_embeddings_for(" in source:
        keys |= _option_keys_read_by(text_embeddings)
    return keys


def test_every_method_lists_the_options_it_reads_and_reads_no_other():
    """issue 31, item 13: the one list of method options the config checks is the methods' own."""
    import sys

    from tctseg.methods import available_methods, method_class

    assert set(settings.METHOD_OPTIONS) == set(available_methods())
    for name, listed in settings.METHOD_OPTIONS.items():
        module = sys.modules[method_class(name).__module__]
        assert set(listed) == _option_keys_read_by(module), name


def test_build_method_refuses_an_unknown_option_also_past_the_configs_own_check():
    from tctseg.methods import build_method

    config = config_from_dict(BASE, ["method.name=me", "network.width=4", "network.depth=2"])
    config.method.options = {"exclusion_wieght": 5}  # as a library user might
    with pytest.raises(ConfigError, match=r"^method.options.exclusion_wieght: unknown option \(did you mean exclusion_weight\?\)"):
        build_method(config)
    config.method.options = {"exclusion_weight": 5}
    assert build_method(config).exclusion_weight == 5
