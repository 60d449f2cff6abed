import pytest
import yaml

from tctseg.config import config_from_dict, load_config
from tctseg.errors import ConfigError

BASE = {
    "classes": ["liver", "spleen"],
    "datasets": [{"name": "msd_liver", "format": "msd", "path": "data/Task03_Liver", "classes": ["liver"]}],
}


def test_defaults_are_the_papers():
    config = config_from_dict(BASE)
    assert config.train.epochs == 200 and config.train.batch_size == 4
    assert config.train.patch_size == (192, 192, 64) and config.train.lr == 1e-4
    assert config.preprocessing.spacing == (1.0, 1.0, 3.0)
    assert config.method.threshold == "median" and config.method.weighting == "uauwl"
    assert config.num_classes == 2 and config.class_id("spleen") == 2


def test_overrides_are_typed():
    config = config_from_dict(BASE, ["train.epochs=5", "train.patch_size=[64, 64, 32]", "method.threshold=0.5",
                                     "datasets.0.role=test", "method.threshold=null"])
    assert config.train.epochs == 5 and config.train.patch_size == (64, 64, 32)
    assert config.method.threshold is None and config.datasets[0].role == "test"
    assert config_from_dict(BASE, ["method.threshold=0.5"]).method.threshold == 0.5


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=5", "train.epoch: unknown key"),
        ("train.epochs=five", "train.epochs: expected int, got 'five'"),
        ("train.patch_size=[1, 2]", "train.patch_size: expected 3 values"),
        ("method.threshold=mean", "method.threshold: 'mean' is not median"),
        ("datasets.0.format=nifti", "datasets.0.format: 'nifti' is not one of"),
        ("datasets.3.role=test", "--set datasets.3"),
        ("train.lr=-1", "train.lr: must be > 0"),
        ("train.epochs", "expected KEY=VALUE"),
        ("network.norm=layer", "network.norm"),
        ("datasets.0.classes=[kidney]", "class 'kidney' is not in classes"),
        ("method.empty_classes=ignore", "method.empty_classes: 'ignore' is not one of keep, drop, as_one"),
    ],
)
def test_bad_keys_and_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(BASE, [override])


def test_augment_preset_and_empty_class_rule_are_read():
    with pytest.raises(ConfigError, match="train.augment_preset: 'heavy' is not one of light, strong"):
        config_from_dict(BASE, ["train.augment_preset=heavy"])
    assert config_from_dict(BASE).method.empty_classes == "keep"
    assert config_from_dict(BASE, ["method.empty_classes=as_one"]).method.empty_classes == "as_one"


def test_optional_dataset_with_an_empty_path_is_left_out(monkeypatch):
    monkeypatch.delenv("TCTSEG_NOT_SET", raising=False)
    extra = dict(BASE["datasets"][0], name="extra", role="test", path="${TCTSEG_NOT_SET:-}")
    config = config_from_dict(dict(BASE, datasets=[*BASE["datasets"], dict(extra, optional=True)]))
    assert [d.name for d in config.datasets] == [d["name"] for d in BASE["datasets"]]
    monkeypatch.setenv("TCTSEG_NOT_SET", "my/test/set")
    config = config_from_dict(dict(BASE, datasets=[*BASE["datasets"], dict(extra, optional=True)]))
    assert config.datasets[-1].name == "extra" and config.datasets[-1].path == "my/test/set"
    monkeypatch.delenv("TCTSEG_NOT_SET")
    with pytest.raises(ConfigError, match=r"datasets\.\d+\.path: is empty"):
        config_from_dict(dict(BASE, datasets=[*BASE["datasets"], extra]))


def test_load_config_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [liver]\ndatasets: []\ntrain: {epochs: [1]}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.epochs: expected int"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("classes: [liver\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="classes: required key is missing"):
        config_from_dict({"datasets": []})


def test_environment_variables_and_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("TCTSEG_TEST_ROOT", "shared/here")
    raw = dict(BASE, datasets=[dict(BASE["datasets"][0], path="${TCTSEG_TEST_ROOT}/Task03_Liver")],
               cache_dir="${TCTSEG_NOT_SET:-cache/default}")
    config = config_from_dict(raw)
    assert config.datasets[0].path == "shared/here/Task03_Liver" and config.cache_dir == "cache/default"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert load_config(path) == config


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    for path in configs:
        load_config(path)


def test_chaos_configs_share_one_recipe(monkeypatch):
    """chaos_t2 (partial labels), chaos_t2_full (its upper bound) and chaos_t2_all16 (the
    paper's protocol on all 16 subjects) differ in their datasets only."""
    from pathlib import Path

    monkeypatch.delenv("TCTSEG_CHAOS_TEST", raising=False)
    root = Path(__file__).resolve().parents[1] / "configs"
    configs = {name: load_config(root / f"{name}.yaml") for name in ("chaos_t2", "chaos_t2_full", "chaos_t2_all16")}
    recipe = {name: {k: v for k, v in c.to_dict().items() if k not in ("datasets", "output_dir")} for name, c in configs.items()}
    assert recipe["chaos_t2_full"] == recipe["chaos_t2"] == recipe["chaos_t2_all16"]
    # the upper bound trains the same 10 subjects, every organ labelled
    partial = sorted(case for d in configs["chaos_t2"].datasets_with_role("train") for case in d.cases)
    (full,) = configs["chaos_t2_full"].datasets_with_role("train")
    assert sorted(full.cases) == partial and full.classes is None
    # all16: four subjects per organ, all 16 distinct; no validation; a test set only when the user adds one
    all16 = configs["chaos_t2_all16"]
    trains = all16.datasets_with_role("train")
    assert [len(d.cases) for d in trains] == [4, 4, 4, 4] and len({c for d in trains for c in d.cases}) == 16
    assert [len(d.classes) for d in trains] == [1, 1, 1, 1]
    assert not all16.datasets_with_role("validation") and not all16.datasets_with_role("test")
    monkeypatch.setenv("TCTSEG_CHAOS_TEST", "my/chaos_test")
    (test,) = load_config(root / "chaos_t2_all16.yaml").datasets_with_role("test")
    assert test.path == "my/chaos_test"


def test_with_method_changes_the_method_and_nothing_else():
    config = config_from_dict({**BASE, "method": {"name": "tct", "lambda_max": 0.5, "options": {"head_channels": 4}}})
    dodnet = config.with_method("dodnet")
    assert dodnet.method.name == "dodnet" and config.method.name == "tct"
    assert dodnet.method.lambda_max == 0.5 and dodnet.method.options == {"head_channels": 4}
    assert dodnet.train == config.train and dodnet.classes == config.classes
    ablation = config.with_method("tct", threshold=None, consistency=False)
    assert (ablation.method.threshold, ablation.method.consistency) == (None, False)
    assert config.method.threshold == "median"


def test_the_saved_confidence_filter_switch_of_earlier_runs_is_read_or_refused():
    raw = {"classes": ["liver"], "datasets": [], "method": {"name": "tct", "confidence_filter": False}}
    assert config_from_dict(raw).method.filter == "iou"  # every run folder of that time saved false
    raw["method"]["confidence_filter"] = True  # the old filter (on top of IoU) no longer exists
    with pytest.raises(ConfigError, match="method.confidence_filter: replaced by method.filter: confidence"):
        config_from_dict(raw)
    with pytest.raises(ConfigError, match="method.filter"):
        config_from_dict({"classes": ["liver"], "datasets": [], "method": {"filter": "entropy"}})
    assert config_from_dict({"classes": ["liver"], "datasets": [], "method": {"filter": "confidence"}}).method.filter == "confidence"


# --------------------------------------------------------------------------- ranges (issue 31, items 7, 12, 13)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.num_workers=-1", "train.num_workers: must be >= 0, got -1"),
        ("train.weight_decay=-1", "train.weight_decay: must be >= 0, got -1.0"),
        ("train.lr=0", "train.lr: must be > 0, got 0.0"),
        ("train.epochs=0", "train.epochs: must be >= 1, got 0"),
        ("train.iterations_per_epoch=0", "train.iterations_per_epoch: must be >= 1, got 0"),
        ("train.batch_size=-2", "train.batch_size: must be >= 1, got -2"),
        ("train.seed=-1", "train.seed: must be >= 0, got -1"),
        ("train.max_nonfinite_steps=0", "train.max_nonfinite_steps: must be >= 1, got 0"),
        ("network.width=0", "network.width: must be in 1..512 (the paper's is 16), got 0"),
        ("network.width=1000000", "network.width: must be in 1..512 (the paper's is 16), got 1000000"),
        ("network.depth=1", "network.depth: must be in 2..8 (the paper's is 5), got 1"),
        ("network.depth=40", "network.depth: must be in 2..8 (the paper's is 5), got 40"),
        ("method.lambda_max=-1", "method.lambda_max: must be >= 0, got -1.0"),
        ("preprocessing.workers=-1", "preprocessing.workers: must be >= 0, got -1"),
        ("inference.sw_batch_size=0", "inference.sw_batch_size: must be >= 1, got 0"),
        # item 12: made every prepared voxel 1.0, NaN, or (MR) 0
        ("preprocessing.ct_clip=[1024, -1024]",
         "preprocessing.ct_clip: the low bound must be below the high one (e.g. [-1024, 1024] HU), got [1024.0, -1024.0]"),
        ("preprocessing.ct_clip=[5, 5]", "preprocessing.ct_clip: the low bound must be below the high one"),
        ("preprocessing.mr_percentiles=[99.5, 0.5]",
         "preprocessing.mr_percentiles: expected 0 <= low < high <= 100 (e.g. [0.5, 99.5]), got [99.5, 0.5]"),
        ("preprocessing.mr_percentiles=[50, 50]", "preprocessing.mr_percentiles: expected 0 <= low < high <= 100"),
        ("preprocessing.mr_percentiles=[-1, 99]", "preprocessing.mr_percentiles: expected 0 <= low < high <= 100"),
        ("preprocessing.mr_percentiles=[1, 101]", "preprocessing.mr_percentiles: expected 0 <= low < high <= 100"),
    ],
)
def test_values_out_of_range_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(BASE, [override])
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_a_training_step_too_large_for_any_machine_is_refused_before_anything_is_allocated():
    """issue 31: patch [4096]*3 allocated 256 GiB after the cache was prepared; width 10^6 asked for 108 TB."""
    from tctseg.config import MAX_TRAINING_MEMORY_GB, training_memory_gb, unet_parameters

    with pytest.raises(ConfigError) as error:
        config_from_dict(BASE, ["train.patch_size=[4096, 4096, 4096]"])
    assert str(error.value) == (
        "train.patch_size [4096, 4096, 4096] × train.batch_size 4 × network.width 16 (network.depth 5): a training "
        "step would need about 4.22e+05 GB (float32 activations and parameters, estimated before anything is "
        "allocated), more than the 512 GB tctseg allows; lower one of them (the paper's [192, 192, 64] × 4 × 16 "
        "needs about 15 GB)"
    )
    with pytest.raises(ConfigError, match=r"^train.patch_size \[192, 192, 64\] × train.batch_size 256 × network.width 16 "):
        config_from_dict(BASE, ["train.batch_size=256"])
    with pytest.raises(ConfigError, match=r"× network.width 512 \(network.depth 8\): a training step would need about"):
        config_from_dict(BASE, ["network.width=512", "network.depth=8", "train.patch_size=[16, 16, 16]", "train.batch_size=1"])
    # the paper's setting (the defaults), the shipped CPU recipe and a wide net on a small patch are accepted
    paper = config_from_dict(BASE)
    assert (paper.network.width, paper.train.patch_size, paper.train.batch_size) == (16, (192, 192, 64), 4)
    assert 14 < training_memory_gb((192, 192, 64), 4, 16, 5) < 16 < MAX_TRAINING_MEMORY_GB
    config_from_dict(BASE, ["network.width=256", "train.patch_size=[96, 96, 32]", "train.batch_size=2"])
    # the estimate pads the patch as the U-Net does, and counts the U-Net's weights (Tab. 6: 4.12 M at width 16)
    assert training_memory_gb((190, 190, 60), 4, 16, 5) == training_memory_gb((192, 192, 64), 4, 16, 5)
    assert unet_parameters(16, 5) == 4_119_984


def test_an_unknown_method_option_is_refused_naming_it():
    """issue 31: `exclusion_wieght: 5` was ignored in silence."""
    with pytest.raises(ConfigError) as error:
        config_from_dict({**BASE, "method": {"name": "me", "options": {"exclusion_wieght": 5}}})
    message = str(error.value)
    assert message.startswith("method.options.exclusion_wieght: unknown option (did you mean exclusion_weight?); "
                              "method me reads: exclusion_weight; known to any method: blocks, "), message
    with pytest.raises(ConfigError, match=r"^method.options.k: unknown option; method tct reads: none;"):
        config_from_dict({**BASE, "method": {"options": {"k": 1}}})
    with pytest.raises(ConfigError, match=r"^method.options.exclusion_wieght: unknown option"):
        config_from_dict(BASE, ["method.options.exclusion_wieght=5"])
    # one config may carry several methods' options (compare trains them all from it)
    config = config_from_dict({**BASE, "method": {"name": "tct", "options": {"exclusion_weight": 1, "head_channels": 4}}})
    assert config.with_method("me").method.options["exclusion_weight"] == 1
