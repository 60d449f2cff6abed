"""configs/paper_ct.yaml holds Tab. 1's held-out splits (Fig. 3b) as fixed case lists, and
`compare` scores the main table on them and BTCV / WORD / AMOS only per dataset."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from tctseg.compare.experiments import Comparison, _check_methods_build
from tctseg.compare.testsets import classify_test_sets, restrict
from tctseg.config import load_config
from tctseg import experiment

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "paper_splits.py"
PAPER_CT = ROOT / "configs" / "paper_ct.yaml"
# Fig. 3b: (training cases, test cases)
FIG_3B = {"kits19": (168, 42), "msd_liver": (104, 27), "msd_pancreas": (224, 57), "msd_spleen": (32, 9)}


def _script():
    spec = importlib.util.spec_from_file_location("paper_splits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def paper_ct():
    return load_config(PAPER_CT)


def _by_name(config):
    return {d.name: d for d in config.datasets}


def test_every_training_set_has_fig_3b_counts_and_disjoint_held_out_cases(paper_ct):
    datasets = _by_name(paper_ct)
    for name, (n_train, n_test) in FIG_3B.items():
        train, test = datasets[name], datasets[f"{name}_test"]
        assert (train.role, test.role) == ("train", "test")
        assert (train.format, train.path) == (test.format, test.path)  # same source: held out from it
        assert len(train.cases) == len(set(train.cases)) == n_train, name
        assert len(test.cases) == len(set(test.cases)) == n_test, name
        assert not set(train.cases) & set(test.cases), name
    # nothing else trains on these folders, and no other test set reads them
    assert [d.name for d in paper_ct.datasets if d.role == "train"] == list(FIG_3B)
    assert sum(len(d.cases) for d in paper_ct.datasets if d.role == "train") == 528  # 544 of Fig. 3b less CHAOS' 16


def test_the_lists_are_the_source_ids_split_by_the_documented_rule(paper_ct):
    script = _script()
    datasets = _by_name(paper_ct)
    splits = script.paper_splits()
    assert set(splits) == set(FIG_3B)
    for name, _, _, ids, _, _ in script.DATASETS:
        train, test = splits[name]
        assert datasets[name].cases == train and datasets[f"{name}_test"].cases == test, name
        assert sorted(train + test) == sorted(ids)  # every labelled training case, once
    # the source ids: KiTS19's labelled cases, MSD's training cases as the converters name them
    assert script.KITS19_IDS[0] == "case_00000" and script.KITS19_IDS[-1] == "case_00209"
    assert len(script.MSD_LIVER_IDS) == 131 and script.MSD_LIVER_IDS[:2] == ["liver_0", "liver_1"]
    pancreas = [script.case_number(c) for c in script.MSD_PANCREAS_IDS]
    assert len(pancreas) == len(set(pancreas)) == 281 and pancreas == sorted(pancreas)
    assert (pancreas[0], pancreas[-1]) == (1, 421)
    assert all(c == f"pancreas_{n:03d}" for c, n in zip(script.MSD_PANCREAS_IDS, pancreas))
    assert len(script.MSD_SPLEEN_IDS) == 41
    # the rule itself, by hand: a fresh default_rng(0) permutation, its first n_test positions
    ordered = sorted(script.MSD_SPLEEN_IDS, key=script.case_number)
    held = sorted((ordered[i] for i in np.random.default_rng(0).permutation(41)[:9]), key=script.case_number)
    assert splits["msd_spleen"][1] == held
    # the config's block is exactly what the script writes
    assert script.main(["--check"]) == 0
    text = PAPER_CT.read_text(encoding="utf-8")
    assert script.replace_block(text, script.generated_block()) == text


def test_split_refuses_duplicate_ids_and_impossible_counts():
    script = _script()
    with pytest.raises(ValueError):
        script.split(["a_1", "a_1", "a_2"], 1)
    with pytest.raises(ValueError):
        script.split(["a_1", "a_2"], 2)
    train, test = script.split([f"x_{i}" for i in (10, 2, 1)], 1)
    assert len(test) == 1 and sorted(train + test, key=script.case_number) == ["x_1", "x_2", "x_10"]


def test_compare_parses_paper_ct_and_puts_btcv_word_amos_in_the_generalisation_table(paper_ct, tmp_path):
    sets = classify_test_sets(paper_ct)
    assert sets.held_out == ("kits19_test", "msd_liver_test", "msd_pancreas_test", "msd_spleen_test")
    assert sets.unseen == ("btcv", "word", "amos") and sets.main == sets.held_out and sets.split
    assert sets.held_out_from["kits19_test"] == ("kits19",)
    assert _by_name(paper_ct)["amos"].modality == "CT"  # AMOS-CT, as the paper
    # the objects `tctseg compare configs/paper_ct.yaml` builds before training anything
    _check_methods_build(paper_ct, ["tct", "tal"], ["main", "generalisation"])
    comparison = Comparison(paper_ct, ["tct", "tal"], tmp_path, seeds=1, fractions=(1.0,),
                            transfer_dataset=None, infer_patch=(32, 32, 32), device="cpu", progress=False,
                            overwrite=False)
    assert comparison.sets == sets


def test_other_configs_keep_their_main_test_sets():
    phantom = classify_test_sets(load_config(ROOT / "configs" / "phantom.yaml"))
    assert phantom.held_out == () and phantom.main == ("btcv",) and not phantom.split  # BTCV only validates
    chaos = classify_test_sets(load_config(ROOT / "configs" / "chaos_t2.yaml"))
    assert chaos.held_out == ("chaos_test",) and chaos.unseen == () and not chaos.split


def _score(dsc, hd95, cases):
    return {"dsc": dsc, "hd95": hd95, "cases": cases}


def _result(folder="run"):
    """A run scored on two held-out sets (both annotate the liver) and one unseen set."""
    per_dataset = {
        "a_test": {"per_class": {"liver": _score(0.9, 2.0, 3), "spleen": _score(0.8, 4.0, 3)}},
        "b_test": {"per_class": {"liver": _score(0.5, 10.0, 1)}},
        "unseen": {"per_class": {"liver": _score(0.1, 50.0, 4), "pancreas": _score(0.2, 30.0, 4)}},
    }
    return {"folder": folder, "wall_time_s": 1.0, "per_class": {}, "mean_dsc": 0.0, "mean_hd95": 0.0,
            "per_dataset": per_dataset}


def test_restrict_pools_the_held_out_sets_case_weighted():
    result = _result()
    pooled = restrict(result, ["a_test", "b_test"], ["liver", "spleen", "pancreas"])
    # liver: (3 · 0.9 + 1 · 0.5) / 4 = 0.8, HD95 (3 · 2 + 10) / 4 = 4; spleen from a_test; no pancreas
    assert pooled["per_class"]["liver"] == pytest.approx(_score(0.8, 4.0, 4))
    assert pooled["per_class"]["spleen"] == pytest.approx(_score(0.8, 4.0, 3))
    assert "pancreas" not in pooled["per_class"]
    assert pooled["mean_dsc"] == pytest.approx(0.8) and pooled["mean_hd95"] == pytest.approx(4.0)
    assert pooled["scored_on"] == ["a_test", "b_test"] and pooled["per_dataset"] == result["per_dataset"]
    assert result["per_class"] == {}  # the run's own record is left as it was
    assert restrict(result, ["nothing"], ["liver"])["mean_dsc"] is None


def test_main_table_scores_held_out_sets_and_generalisation_lists_every_set(tmp_path):
    config = {
        "classes": ["liver", "spleen", "pancreas"],
        "datasets": [
            {"name": "a", "format": "msd", "path": str(tmp_path / "a"), "role": "train", "cases": ["a_1"]},
            {"name": "a_test", "format": "msd", "path": str(tmp_path / "a"), "role": "test", "cases": ["a_2"]},
            {"name": "b", "format": "msd", "path": str(tmp_path / "b"), "role": "train", "cases": ["b_1"]},
            {"name": "b_test", "format": "msd", "path": str(tmp_path / "b" / "."), "role": "test", "cases": ["b_2"]},
            {"name": "unseen", "format": "btcv", "path": str(tmp_path / "u"), "role": "test"},
        ],
        "train": {"patch_size": [16, 16, 8], "batch_size": 1},
        "network": {"width": 4, "depth": 3},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    config = load_config(tmp_path / "c.yaml")
    comparison = Comparison(config, ["tal"], tmp_path / "out", seeds=1, fractions=(1.0,), transfer_dataset=None,
                            infer_patch=(16, 16, 8), device="cpu", progress=False, overwrite=False)
    assert comparison.sets.held_out == ("a_test", "b_test")  # a path spelled differently is the same folder
    image, label = tmp_path / "x.nii.gz", tmp_path / "y.nii.gz"  # never read: the runs are canned
    comparison._cases = [experiment.TestCase("a_test", "a_2", image, label, ("liver", "spleen")),
                         experiment.TestCase("b_test", "b_2", image, label, ("liver",)),
                         experiment.TestCase("unseen", "u_1", image, label, ("liver", "spleen", "pancreas"))]
    comparison.book.run = lambda *args, **kwargs: _result()  # no training: a canned run

    main = comparison.main_table()
    assert main.rows[0][:4] == ["tal", "80.00", "80.00", "–"]  # liver, spleen, pancreas DSC (%)
    assert main.rows[0][-2:] == ["80.00", "4.00"]
    assert "a_test (1 case), b_test (1 case)" in main.notes[0] and "unseen" in main.notes[1]
    assert "held-out" in main.title
    general = comparison.generalisation_table()
    assert [r[0] for r in general.rows] == ["a_test", "b_test", "unseen"]
    assert general.rows[2][3:6] == ["10.00", "–", "20.00"]
    assert any("Unseen" in n and "unseen" in n for n in general.notes)
