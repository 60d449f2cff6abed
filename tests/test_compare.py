"""`tctseg compare`: a tiny end-to-end comparison writes every table; the pure helpers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from _training_data import CLASSES, PATCH, tiny_config, write_nnunet_dataset
from tctseg.cli import main as cli_main
from tctseg.compare import TABLE_NAMES, fraction_cases, mean_sd, split_half, with_training_fraction
from tctseg.compare.efficiency import inference_parameters
from tctseg.compare.experiments import ABLATIONS, dropped_classes, dropped_note, metric_cells
from tctseg.errors import ConfigError
from tctseg.methods import build_method
from tctseg.network import count_parameters


def _compare_config(tmp_path: Path) -> Path:
    """Two partially labeled training sets, a partially and a fully labeled test set."""
    data = write_nnunet_dataset(tmp_path / "raw", seeds=(0, 1, 2, 3, 4, 5))
    labels = {1: "liver", 2: "spleen"}
    config = {
        "classes": CLASSES,
        "cache_dir": str(tmp_path / "cache"),
        "output_dir": str(tmp_path / "runs"),
        "datasets": [
            {"name": "part_liver", "format": "nnunet", "path": str(data), "role": "train", "label_map": labels,
             "classes": ["liver"], "cases": ["case_000", "case_001"]},
            {"name": "part_spleen", "format": "nnunet", "path": str(data), "role": "train", "label_map": labels,
             "classes": ["spleen"], "cases": ["case_002"]},
            {"name": "liver_test", "format": "nnunet", "path": str(data), "role": "test", "label_map": labels,
             "classes": ["liver"], "cases": ["case_003"]},
            {"name": "full_test", "format": "nnunet", "path": str(data), "role": "test", "label_map": labels,
             "cases": ["case_004", "case_005"]},
        ],
        "preprocessing": {"spacing": [1.0, 1.0, 1.0], "workers": 1},
        "network": {"width": 4, "depth": 3, "norm": "batch", "channels_last": False},
        "method": {"name": "tct"},
        "train": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 1, "patch_size": PATCH, "lr": 1e-3,
                  "seed": 5, "val_every": 1, "num_workers": 0, "augment": False},
        "inference": {"overlap": 0.0, "sw_batch_size": 8},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("compare")
    config = _compare_config(tmp_path)
    output = tmp_path / "out"
    code = cli_main(["compare", str(config), "--methods", "tct,tal", "--seeds", "1", "--tables", "all",
                     "--output", str(output), "--infer-patch", "16,16,8", "--no-progress", "--device", "cpu"])
    assert code == 0
    return config, output


def _read_csv(path: Path) -> tuple[list[str], list[str], list[list[str]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    comments = [line for line in lines if line.startswith("#")]
    rows = list(csv.reader(line for line in lines if not line.startswith("#")))
    return comments, rows[0], rows[1:]


def test_every_table_is_written_as_markdown_and_csv_with_its_budget(compared):
    _, output = compared
    for name in TABLE_NAMES:
        md = (output / "tables" / f"{name}.md").read_text(encoding="utf-8")
        comments, header, rows = _read_csv(output / "tables" / f"{name}.csv")
        budget = comments[0]
        for text in (md, budget):
            assert "Budget: 1 epoch × 2 iterations/epoch, patch 16×16×8, batch 1, net width 4 depth 3" in text
            assert "1 seed (5)" in text and "torch " in text and "wall time" in text
            assert "CPU " in text
        assert rows, name
        assert all(len(row) == len(header) for row in rows), name
        # the markdown table has the same header
        assert "| " + " | ".join(header) + " |" in md


def test_main_and_generalisation_rows_are_methods_columns_classes(compared):
    _, output = compared
    metric_columns = [f"{c} DSC (%)" for c in CLASSES] + [f"{c} HD95 (mm)" for c in CLASSES] + ["mean DSC (%)", "mean HD95 (mm)"]
    _, header, rows = _read_csv(output / "tables" / "main.csv")
    assert header == ["method"] + metric_columns
    assert [r[0] for r in rows] == ["tct", "tal"]
    for row in rows:  # one seed: plain numbers, DSC within [0, 100]
        assert 0.0 <= float(row[1]) <= 100.0 and "±" not in row[1]
    # the cells are the run's own metrics.json, in %
    metrics = json.loads((output / "main" / "tct" / "seed0" / "tct" / "metrics" / "metrics.json").read_text())
    assert rows[0][1] == f"{100 * metrics['per_class']['liver']['dsc']:.2f}"
    assert rows[0][3] == f"{metrics['per_class']['liver']['hd95']:.2f}"
    # the dropped-class count covers every method's scored (run, class) pairs
    comments, _, _ = _read_csv(output / "tables" / "main.csv")
    dropped = [c for c in comments if "Dropped classes" in c]
    assert len(dropped) == 1 and f"tct {_dropped_count(rows[0])}" in dropped[0]

    _, header, rows = _read_csv(output / "tables" / "generalisation.csv")
    assert header == ["test dataset", "fully labeled", "method"] + metric_columns
    assert [r[:3] for r in rows] == [["liver_test", "no", "tct"], ["liver_test", "no", "tal"],
                                     ["full_test", "yes", "tct"], ["full_test", "yes", "tal"]]
    assert rows[0][4] == "–"  # liver_test does not annotate the spleen


def _dropped_count(row: list[str]) -> str:
    """'K of N': of a one-seed main row's scored class DSC cells, N, how many are below 10 %."""
    cells = [cell for cell in row[1:1 + len(CLASSES)] if cell != "–"]
    return f"{sum(float(cell) < 10.0 for cell in cells)} of {len(cells)}"


def test_dropped_classes_are_counted_per_run_below_ten_percent():
    runs = [
        {"per_class": {"liver": {"dsc": 0.80}, "spleen": {"dsc": 0.05}}},
        {"per_class": {"liver": {"dsc": 0.0949}, "spleen": {"dsc": 0.10}}},
        {"per_class": {"liver": {"dsc": 0.70}}},  # the spleen not scored: not counted
    ]
    assert dropped_classes(runs, ["liver", "spleen"]) == [(0, "spleen", 0.05), (1, "liver", 0.0949)]
    note = dropped_note({"tct": runs, "tal": runs[:1]}, ["liver", "spleen"])
    assert "tct 2 of 5 (seed 0 spleen 5.0 %; seed 1 liver 9.5 %)" in note
    assert "tal 1 of 2 (seed 0 spleen 5.0 %)" in note


def test_efficiency_lowdata_ablation_and_transfer_tables(compared):
    _, output = compared
    _, header, rows = _read_csv(output / "tables" / "efficiency.csv")
    assert header[0] == "method" and "inference time per 16×16×8 patch (s)" in header
    by_method = {r[0]: r for r in rows}
    assert set(by_method) == {"tct", "tal"}
    # TCT runs the same net as TAL at inference (ATHs excluded) but trains more parameters
    assert by_method["tct"][1] == by_method["tal"][1]
    assert float(by_method["tct"][2]) > float(by_method["tct"][1])
    assert float(by_method["tal"][3]) > 0 and float(by_method["tal"][4]) > 0

    _, header, rows = _read_csv(output / "tables" / "lowdata.csv")
    assert header[:3] == ["method", "training fraction", "training cases"]
    # part_liver has 2 cases, part_spleen 1: 20% and 50% keep 1 + 1, 100% keeps 2 + 1
    assert [r[:3] for r in rows] == [["tct", "20%", "2"], ["tct", "50%", "2"], ["tct", "100%", "3"],
                                     ["tal", "20%", "2"], ["tal", "50%", "2"], ["tal", "100%", "3"]]
    subset = yaml.safe_load((output / "lowdata" / "tct_20pct" / "seed0" / "tct" / "config.yaml").read_text())
    assert subset["datasets"][0]["cases"] == ["case_000"] and subset["datasets"][1]["cases"] == ["case_002"]

    _, header, rows = _read_csv(output / "tables" / "ablation.csv")
    assert header[:2] == ["paper table", "TCT variant"]
    assert len(rows) == len(ABLATIONS)
    assert {r[0] for r in rows} == {"Tab. 5", "Tab. 7", "Tab. 8", "Tab. 9"}
    variant = yaml.safe_load((output / "ablation" / "uwl" / "seed0" / "tct" / "config.yaml").read_text())
    assert variant["method"]["weighting"] == "uwl" and variant["method"]["threshold"] == "median"
    old_rule = yaml.safe_load((output / "ablation" / "empty_as_one" / "seed0" / "tct" / "config.yaml").read_text())
    assert old_rule["method"]["empty_classes"] == "as_one" and variant["method"]["empty_classes"] == "keep"
    # the row equal to the config is the main TCT run, not trained again
    assert not (output / "ablation" / "threshold_median").exists()

    _, header, rows = _read_csv(output / "tables" / "transfer.csv")
    assert header[:3] == ["start", "fine-tune fraction", "fine-tune cases"]
    # from scratch, then every compared method fine-tuned from its own main run; each at 20/50/100%
    starts = ["from scratch", "fine-tuned from tct", "fine-tuned from tal"]
    assert [r[:2] for r in rows] == [[s, f] for s in starts for f in ("20%", "50%", "100%")]
    assert all(r[2] == "1" for r in rows)  # full_test's 2 cases: 1 to fine-tune on, 1 held out
    for folder, method in (("finetune_tct_20pct", "tct"), ("finetune_tal_20pct", "tal"), ("scratch_20pct", "tal")):
        run = yaml.safe_load((output / "transfer" / folder / "seed0" / method / "config.yaml").read_text())
        assert run["method"]["name"] == method
        assert [(d["role"], d["cases"]) for d in run["datasets"]] == [("train", ["case_004"]), ("test", ["case_005"])]
        assert run["datasets"][1]["name"] == "full_test_heldout"


@pytest.mark.parametrize("method", ["tct", "tal"])
def test_fine_tuning_starts_from_the_methods_own_main_weights(compared, method):
    import torch

    _, output = compared
    key = "network.backbone.encoder.0.1.num_batches_tracked"  # BatchNorm counts the batches it has seen

    def batches_seen(path: Path) -> int:
        return int(torch.load(path, weights_only=True)["model"][key])

    main_run = json.loads((output / "main" / method / "seed0" / "result.json").read_text())
    pretrained = batches_seen(Path(main_run["checkpoint"]))  # best, or last without a validation set
    assert pretrained == 2  # 1 epoch × 2 iterations
    # fine-tuning continues the pre-trained count; training from scratch starts at 0
    finetuned = output / "transfer" / f"finetune_{method}_20pct" / "seed0" / method / "checkpoint_last.pt"
    assert batches_seen(finetuned) == pretrained + 2
    assert batches_seen(output / "transfer" / "scratch_20pct" / "seed0" / "tal" / "checkpoint_last.pt") == 2


def test_report_holds_the_tables_and_a_rerun_reuses_every_run(compared, capsys):
    config, output = compared
    html = (output / "report.html").read_text(encoding="utf-8")
    assert "Low-data regimes" in html and "Transfer learning" in html and "Budget: " in html
    before = (output / "main" / "tct" / "seed0" / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    assert cli_main(["compare", str(config), "--methods", "tct,tal", "--tables", "main,lowdata",
                     "--output", str(output), "--infer-patch", "16,16,8", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "training" not in printed and "finished before, reused" in printed
    assert (output / "main" / "tct" / "seed0" / "result.json").stat().st_mtime_ns == before


def test_ablation_rows_can_be_chosen_and_unknown_rows_are_refused(compared, capsys):
    config, output = compared
    capsys.readouterr()
    assert cli_main(["compare", str(config), "--methods", "tct,tal", "--tables", "ablation",
                     "--ablations", "no_consistency,empty_as_one", "--output", str(output),
                     "--infer-patch", "16,16,8", "--no-progress"]) == 0
    assert "finished before, reused" in capsys.readouterr().out
    _, _, rows = _read_csv(output / "tables" / "ablation.csv")
    assert [r[1] for r in rows] == ["without task consistency", "absent = IoU 1, previous rule"]
    assert cli_main(["compare", str(config), "--tables", "ablation", "--ablations", "no_such_row",
                     "--output", str(output), "--no-progress"]) == 2
    assert "--ablations: unknown row 'no_such_row'" in capsys.readouterr().err


def test_mean_sd_over_seeds():
    assert mean_sd([0.5, 0.7], scale=100) == "60.00 ± 14.14"  # sample sd: sqrt((10² + 10²) / 1)
    assert mean_sd([3.0]) == "3.00"
    assert mean_sd([1.0, None, math.nan, 3.0], digits=1) == "2.0 ± 1.4"
    assert mean_sd([None, math.nan]) == "–"


def test_metric_cells_are_mean_and_sd_over_seeds():
    seed_results = [
        {"per_class": {"liver": {"dsc": 0.5, "hd95": 4.0}}, "mean_dsc": 0.5, "mean_hd95": 4.0,
         "per_dataset": {"a": {"per_class": {"liver": {"dsc": 0.2, "hd95": 1.0}}, "mean_dsc": 0.2, "mean_hd95": 1.0}}},
        {"per_class": {"liver": {"dsc": 0.7, "hd95": 6.0}}, "mean_dsc": 0.7, "mean_hd95": 6.0,
         "per_dataset": {"a": {"per_class": {"liver": {"dsc": 0.4, "hd95": 3.0}}, "mean_dsc": 0.4, "mean_hd95": 3.0}}},
    ]
    # columns: liver DSC, spleen DSC, liver HD95, spleen HD95, mean DSC, mean HD95
    assert metric_cells(seed_results, CLASSES) == [
        "60.00 ± 14.14", "–", "5.00 ± 1.41", "–", "60.00 ± 14.14", "5.00 ± 1.41"]
    assert metric_cells(seed_results, CLASSES, dataset="a")[:3] == ["30.00 ± 14.14", "–", "2.00 ± 1.41"]


def test_fraction_subsets_are_deterministic_by_sorted_id():
    ids = ["c3", "c1", "c2", "c10", "c5"]  # sorted: c1, c10, c2, c3, c5
    assert fraction_cases(ids, 0.2) == ["c1"]
    assert fraction_cases(ids, 0.5) == ["c1", "c10", "c2"]  # 2.5 rounds half up
    assert fraction_cases(list(reversed(ids)), 0.5) == ["c1", "c10", "c2"]
    assert fraction_cases(ids, 1.0) == ["c1", "c10", "c2", "c3", "c5"]
    assert fraction_cases(["only"], 0.01) == ["only"]  # at least one case
    with pytest.raises(ConfigError, match="--fractions"):
        fraction_cases(ids, 0.0)
    assert split_half(ids) == (["c1", "c10", "c2"], ["c3", "c5"])

    config = tiny_config()
    ids_by_dataset = {"ds_liver": ["b", "a", "c", "d"], "ds_spleen": ["x"]}
    half = with_training_fraction(config, ids_by_dataset, 0.5)
    assert half.datasets[0].cases == ["a", "b"]
    assert half.datasets[1] == config.datasets[1]  # 1 case: all of it, unchanged
    assert with_training_fraction(config, ids_by_dataset, 1.0) == config


def test_inference_parameters_exclude_tct_auxiliary_heads():
    tct = build_method(tiny_config("tct"))
    tal = build_method(tiny_config("tal"))
    expected = count_parameters(tct.network) - count_parameters(tct.network.aux_heads)
    assert inference_parameters(tct, (4, 4, 4)) == expected == count_parameters(tal)
    assert count_parameters(tct) > expected
    assert all(p.grad is None and p.requires_grad for p in tct.parameters())  # left as found


def test_paired_table_is_the_first_method_minus_the_other_seed_by_seed(compared):
    _, output = compared
    _, main_header, main_rows = _read_csv(output / "tables" / "main.csv")
    _, header, rows = _read_csv(output / "tables" / "paired.csv")
    assert header[:5] == ["pair", "seed", "A mean DSC (%)", "B mean DSC (%)", "Δ mean DSC (points)"]
    by_method = {r[0]: dict(zip(main_header, r)) for r in main_rows}
    seed_row = dict(zip(header, rows[0]))
    assert seed_row["pair"] == "tct − tal" and seed_row["seed"] == "5"
    assert seed_row["A mean DSC (%)"] == by_method["tct"]["mean DSC (%)"]
    assert seed_row["B mean DSC (%)"] == by_method["tal"]["mean DSC (%)"]
    expected = float(by_method["tct"]["mean DSC (%)"]) - float(by_method["tal"]["mean DSC (%)"])
    assert abs(float(seed_row["Δ mean DSC (points)"]) - expected) < 0.011
    assert "min" in seed_row["A wall time"] or seed_row["A wall time"].endswith(" s")
    # one seed: no spread and no test
    assert [r[1] for r in rows[1:]] == ["mean ± sd", "paired t-test p", "Wilcoxon p"]
    assert rows[2][4] == "–" and rows[3][4] == "–"


def test_compare_refuses_minilm_in_place_of_the_authors_clip_embeddings(tmp_path, monkeypatch, capsys):
    """issue 28, item 4: without the authors' file compare stops, in one line saying how to point
    to it or to choose MiniLM, before anything is written; named sources pass."""
    from tctseg.compare.experiments import _check_text_embeddings
    from tctseg.config import load_config

    config_path = _compare_config(tmp_path)
    monkeypatch.setenv("TCTSEG_SHARED", str(tmp_path / "nowhere"))
    output = tmp_path / "out"
    assert cli_main(["compare", str(config_path), "--methods", "tct,clip", "--tables", "main",
                     "--output", str(output), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nowhere" in err and "does not put MiniLM in place of" in err
    assert "TCTSEG_SHARED" in err and "method.options.clip_embeddings" in err
    assert err.endswith("or choose method.options.text_model: minilm")
    assert not output.exists()
    config = load_config(config_path)
    _check_text_embeddings(config, ["tct", "tal"])  # no CLIP-Driven: nothing to check
    for options in ({"text_model": "minilm"}, {"text_embeddings": "organs.pt"}, {"text_model": "clip"}):
        config.method.options = options
        _check_text_embeddings(config, ["clip"])  # what the config names (a missing file is the build's error)


def test_results_json_records_the_clip_embeddings_of_the_runs(tmp_path):
    from tctseg.compare.experiments import write_results

    record = {"source": "file", "chosen_by": "method.options.text_embeddings", "path": "x/organs.pt", "sha256": "ab"}
    runs = [{"per_class": {}, "mean_dsc": 0.5, "text_embeddings": record},
            {"per_class": {}, "mean_dsc": 0.7, "text_embeddings": dict(record)}]
    write_results({"clip": runs, "tal": [{"per_class": {}, "mean_dsc": 0.6}]}, CLASSES, tmp_path / "results.json")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["clip"]["text_embeddings"] == record and "text_embeddings" not in results["tal"]
    other = dict(record, sha256="cd")
    write_results({"clip": [runs[0], dict(runs[1], text_embeddings=other)]}, CLASSES, tmp_path / "results.json")
    assert json.loads((tmp_path / "results.json").read_text())["clip"]["text_embeddings"] == [record, other]


def test_pfls_efficiency_note_says_what_its_training_time_counts(tmp_path):
    from tctseg.compare.experiments import Comparison
    from tctseg.config import load_config

    config = load_config(_compare_config(tmp_path), ["train.epochs=10"])
    comparison = Comparison(config, ["pfl"], tmp_path / "out", seeds=1, fractions=[1.0], transfer_dataset=None,
                            infer_patch=(16, 16, 8), device="cpu", progress=False, overwrite=False)
    assert comparison._pfl_stage1().startswith("N + 1 full trainings of 10 epochs")
    assert "method.options.stage1_epochs ≈ train.epochs / N" in comparison._pfl_stage1()
    config.method.options = {"stage1_epochs": 2}
    assert comparison._pfl_stage1().startswith("its single-organ networks trained 2 of the final network's 10 epochs")


# last in the file: it adds a second seed to the shared comparison, and with it an ensemble row
def test_a_method_with_several_seeds_gets_an_ensemble_row_of_its_checkpoints(compared, capsys):
    config, output = compared
    args = ["compare", str(config), "--methods", "tal", "--seeds", "2", "--tables", "main",
            "--output", str(output), "--infer-patch", "16,16,8", "--no-progress"]
    assert cli_main(args) == 0
    comments, header, rows = _read_csv(output / "tables" / "main.csv")
    by_method = {r[0]: dict(zip(header, r)) for r in rows}
    assert list(by_method) == ["tal", "tal ensemble of 2"]
    assert "±" in by_method["tal"]["mean DSC (%)"]  # two seeds
    ensemble_cell = by_method["tal ensemble of 2"]["mean DSC (%)"]
    assert ensemble_cell != "–" and "±" not in ensemble_cell  # one prediction: no sd
    assert any("tal ensemble of 2: the 2 seeds' checkpoints predicting together" in c for c in comments)
    folder = output / "main" / "tal" / "ensemble"
    result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    seeds = [json.loads((output / "main" / "tal" / f"seed{k}" / "result.json").read_text())["checkpoint"] for k in (0, 1)]
    assert result["members"] == seeds and seeds[0] != seeds[1]
    # every test case predicted by both members (the predictions index records them)
    index = json.loads((folder / "tal" / "predictions" / "index.json").read_text(encoding="utf-8"))
    models = [entry["models"] for entry in index]
    assert models and all(len(m) == 2 for m in models)
    assert abs(100 * result["mean_dsc"] - float(ensemble_cell)) < 0.006
    # a rerun with the same finished seeds reuses the ensemble
    before = (folder / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    assert cli_main(args) == 0
    assert "training" not in capsys.readouterr().out
    assert (folder / "result.json").stat().st_mtime_ns == before


def test_new_inference_settings_rescore_finished_runs_without_training_them(compared, capsys):
    """Switching on `inference.largest_component` after the runs: each finished checkpoint
    predicts and is scored again (with one component per organ), its training is kept (the
    checkpoint untouched, its training time carried over), the ensemble predicts again; a
    change of what is trained is still refused."""
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    config, output = compared
    args = ["compare", str(config), "--methods", "tal", "--seeds", "2", "--tables", "main",
            "--output", str(output), "--infer-patch", "16,16,8", "--no-progress"]
    assert cli_main(args) == 0  # the two seeds and their ensemble exist (reused if there)
    seed0, seed1 = (output / "main" / "tal" / f"seed{k}" for k in (0, 1))
    before = json.loads((seed0 / "result.json").read_text())
    checkpoint = Path(before["checkpoint"])
    checkpoint_time = checkpoint.stat().st_mtime_ns
    # a result written before results recorded their training key: its config.yaml says it
    legacy = json.loads((seed1 / "result.json").read_text())
    legacy.pop("train_key", None)
    (seed1 / "result.json").write_text(json.dumps(legacy))
    ensemble_time = (output / "main" / "tal" / "ensemble" / "result.json").stat().st_mtime_ns
    capsys.readouterr()

    assert cli_main(args + ["--set", "inference.largest_component=true"]) == 0
    printed = capsys.readouterr().out
    assert "training" not in printed
    assert printed.count("trained before with other inference settings, predicting and scoring again") == 2
    after = json.loads((seed0 / "result.json").read_text())
    assert after["key"] != before["key"] and after["train_key"] == before["train_key"]
    assert after["rescored"] is True and after["train_time_s"] == before["train_time_s"]
    assert checkpoint.stat().st_mtime_ns == checkpoint_time
    assert (output / "main" / "tal" / "ensemble" / "result.json").stat().st_mtime_ns != ensemble_time
    predictions = sorted((seed0 / "tal" / "predictions").rglob("case_*.nii.gz"))
    assert predictions
    for path in predictions:
        labels = np.asarray(nib.load(path).dataobj)
        for class_id in range(1, len(CLASSES) + 1):
            assert ndimage.label(labels == class_id, np.ones((3, 3, 3)))[1] <= 1, (path, class_id)
    # the run's table cell is the re-scored run
    _, header, rows = _read_csv(output / "tables" / "main.csv")
    assert "±" in rows[0][header.index("mean DSC (%)")]

    assert cli_main(args + ["--set", "inference.largest_component=true", "--set", "train.lr=0.002"]) == 2
    assert "holds a run of another config or data" in capsys.readouterr().err
