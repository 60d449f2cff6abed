"""Baselines' typed ``method.options`` (tctseg.methods.options)."""

import pytest

from tctseg.config import config_from_dict
from tctseg.errors import ConfigError
from tctseg.methods import build_method
from tctseg.methods.aal import AALOptions
from tctseg.methods.me import MEOptions
from tctseg.methods.options import read_options
from tctseg.methods.task_prompted import DynamicHeadOptions


def config(name, **options):
    return config_from_dict({"classes": ["liver", "spleen"], "datasets": [],
                             "network": {"width": 8, "depth": 3, "norm": "instance"},
                             "method": {"name": name, "options": options}})


def test_read_options_takes_defaults_converts_values_and_ignores_other_keys():
    assert read_options(AALOptions, {}) == AALOptions(2.0, 1.0, 3.0)
    assert read_options(MEOptions, {"exclusion_weight": "1.5", "other": "x"}) == MEOptions(1.5)
    options = read_options(DynamicHeadOptions, {"head_channels": 4})
    assert options.head_channels == 4 and isinstance(options.head_channels, int)


def test_a_bad_option_names_its_key():
    with pytest.raises(ConfigError, match=r"method.options.exclusion_weight: expected float, got 'lots'"):
        build_method(config("me", exclusion_weight="lots"))
    with pytest.raises(ConfigError, match=r"method.options.head_channels: expected int, got 'wide'"):
        build_method(config("dodnet", head_channels="wide"))


def test_options_reach_the_methods():
    assert build_method(config("aal", focal_gamma=1.0)).focal_gamma == 1.0
    assert build_method(config("me", exclusion_weight=0.5)).exclusion_weight == 0.5
    assert build_method(config("dodnet", head_channels=4)).heads.head.channels == (4, 4, 4, 1)


def test_pfl_reads_its_stage1_schedule():
    from tctseg.methods.pfl import stage1_epochs

    assert stage1_epochs(config("pfl")) == 200  # the full schedule (train.epochs), as before the option
    assert stage1_epochs(config("pfl", stage1_epochs=40)) == 40  # the paper's ≈ 2 × TAL with five organs
    with pytest.raises(ConfigError, match=r"method.options.stage1_epochs: expected int, got 'short'"):
        build_method(config("pfl", stage1_epochs="short"))
