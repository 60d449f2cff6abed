"""PFL as its three stages (methods/pfl.py, training/pfl_pipeline.py): single-organ networks,
offline pseudo-full labels where ground truth wins, a fresh final network; resumable."""

import contextlib
import json

import numpy as np
import pytest
import torch
import yaml

from tctseg.cli import main
from tctseg.errors import ConfigError, OutputError
from tctseg.files.run_records import mean_epoch_time, seconds_per_epoch
from tctseg.methods import build_method
from tctseg.losses.dice_ce import full_dice_ce_loss
from tctseg.methods.pfl import pseudo_full_label, stage1_epochs
from tctseg.checkpoint import load_checkpoint
from tctseg.training.build import build_trainer
from tctseg.training.pfl_pipeline import (
    PFLPipeline,
    SingleOrganCase,
    label_training_cases,
)
from tctseg.training.trainer import Trainer

from _training_data import MemoryCase, memory_cases, phantom_volume, tiny_config, use_sampler, write_run_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pseudo_full_label_by_hand():
    # N = 3; the case annotates class 1 only; 6 voxels along one axis
    label = np.array([1, 1, 0, 0, 0, 0], np.uint8)
    p2 = np.array([0.9, 0.6, 0.7, 0.2, 0.6, 0.4], np.float32)  # organ 2's network
    p3 = np.array([0.1, 0.8, 0.8, 0.9, 0.6, 0.1], np.float32)  # organ 3's network
    p1 = np.ones(6, np.float32)  # organ 1 is annotated: its network must be ignored
    merged = pseudo_full_label(label, [1], {1: p1, 2: p2, 3: p3})
    # voxel 0, 1: ground truth wins; 2: 3 (0.8 > 0.7); 3: 3; 4: tie 0.6 → the lower id, 2; 5: none > ½
    assert merged.tolist() == [1, 1, 3, 3, 2, 0]
    assert merged.dtype == np.uint8 and label.tolist() == [1, 1, 0, 0, 0, 0]
    # exactly ½ is not "organ"
    assert pseudo_full_label(np.zeros(2, np.uint8), [], {2: np.array([0.5, 0.51])}).tolist() == [0, 2]


def test_full_dice_ce_loss_by_hand():
    # two classes, two voxels: p = softmax(logits) = (0.5, 0.5) at voxel 0, (e/(1+e), 1/(1+e)) at voxel 1
    logits = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])  # [B=1, C=2, S=2]
    labels = torch.tensor([[1, 0]])
    dice, ce = full_dice_ce_loss(logits, labels)
    q = np.exp(1) / (1 + np.exp(1))
    p0, p1 = np.array([0.5, q]), np.array([0.5, 1 - q])  # class 0 and class 1 probabilities
    dice0 = 2 * p0[1] / (p0.sum() + 1)  # class 0 is at voxel 1
    dice1 = 2 * p1[0] / (p1.sum() + 1)  # class 1 is at voxel 0
    assert dice.item() == pytest.approx(1 - (dice0 + dice1) / 2, abs=1e-5)
    assert ce.item() == pytest.approx(-(np.log(0.5) + np.log(q)) / 2, abs=1e-6)


def _hand_made_case():
    image = np.linspace(0.0, 1.0, 4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    label = np.zeros((4, 3, 2), np.uint8)
    label[0] = 1  # the case annotates class 1 (liver) at x = 0
    return MemoryCase("h0", "ds", "CT", (1,), image, label)


def test_stage2_ground_truth_wins_and_labels_are_reused(tmp_path):
    case = _hand_made_case()
    calls = []

    def everywhere(class_id, value):
        def probability(image):
            calls.append(class_id)
            return np.full(image.shape, value, np.float32)
        return probability

    # organ 1's network would claim every voxel, organ 2's (0.8) too: 1 is annotated, so only 2 fills
    networks = {1: everywhere(1, 0.99), 2: everywhere(2, 0.8)}
    [labelled] = label_training_cases([case], networks, tmp_path, seed=0)
    assert calls == [2]  # the annotated organ's network is not even run
    written = np.load(tmp_path / "ds" / "h0.npy")
    expected = np.full((4, 3, 2), 2, np.uint8)
    expected[0] = 1
    assert np.array_equal(written, expected) and np.array_equal(np.asarray(labelled.label), expected)
    assert labelled.annotated == (1, 2)
    record = json.loads((tmp_path / "ds" / "h0.json").read_text())
    assert record["filled_voxels"] == {"2": 18} and record["annotated_by_ground_truth"] == [1]
    assert len(record["class_locations"]["1"]) == 6 and len(record["class_locations"]["2"]) == 18
    assert case.label[0].sum() == 6 and (case.label[1:] == 0).all()  # the input is not written over
    # a rerun reuses the case: no network runs, the same labels
    calls.clear()
    [again] = label_training_cases([case], networks, tmp_path, seed=0)
    assert calls == [] and np.array_equal(np.asarray(again.label), expected)
    # a case whose record is missing (killed between the .npy and the .json) is labelled again
    (tmp_path / "ds" / "h0.json").unlink()
    label_training_cases([case], networks, tmp_path, seed=0)
    assert calls == [2]
    assert not list(tmp_path.glob("ds/.*tmp*"))


def test_single_organ_case_is_a_binary_view():
    train, _ = memory_cases()
    liver_case = train[0]
    view = SingleOrganCase(liver_case, 1)
    assert view.annotated == (1,) and view.case_id == liver_case.case_id
    window = (slice(2, 12), slice(3, 9), slice(0, 5))
    assert np.array_equal(view.label[window], (liver_case.label[window] == 1).astype(np.uint8))
    assert np.array_equal(np.asarray(view.label), (liver_case.label == 1).astype(np.uint8))


def _stage1_mtimes(run):
    return {p.parent.name: p.stat().st_mtime_ns for p in (run / "stage1").glob("*/checkpoint_last.pt")}


@contextlib.contextmanager
def _interrupted_as_stage_starts(stage: int):
    """Ctrl-C as stage ``stage`` of a ``PFLPipeline.fit`` in the block starts; the block expects
    the KeyboardInterrupt."""
    def ctrl_c(self, *args):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(PFLPipeline, f"stage{stage}", ctrl_c)
        yield


def test_pipeline_runs_three_stages_and_resumes_at_each_boundary(tmp_path, monkeypatch):
    use_sampler(monkeypatch)
    train, val = memory_cases()  # c0 annotates liver only, c1 spleen only; v0 both
    config = tiny_config("pfl", epochs=2, iterations_per_epoch=2)
    run = tmp_path / "pfl"
    kwargs = dict(device="cpu", train_cases=train, val_cases=val, progress=False)

    first = build_trainer(config, run, **kwargs)
    assert isinstance(first, PFLPipeline) and isinstance(build_trainer(tiny_config("tal"), tmp_path / "tal", **kwargs), Trainer)
    assert first.organs == [1, 2]
    with _interrupted_as_stage_starts(2):
        first.fit()
    stage1 = _stage1_mtimes(run)
    assert set(stage1) == {"liver", "spleen"}
    liver = load_checkpoint(run / "stage1" / "liver" / "checkpoint_last.pt")
    assert liver["classes"] == ["liver"] and liver["epoch"] == 2 and liver["method"] == "pfl"
    assert liver["model"]["network.main_head.conv.weight"].shape[0] == 2  # organ vs the rest
    assert not (run / "stage2").exists()

    with pytest.raises(OutputError, match="--resume"):
        PFLPipeline(config, run, **kwargs)  # a folder with a run needs --resume or --overwrite

    with _interrupted_as_stage_starts(3):
        PFLPipeline(config, run, resume=True, **kwargs).fit()
    assert _stage1_mtimes(run) == stage1  # stage 1 reused, not retrained
    labels = {p.stem: np.load(p) for p in (run / "stage2").glob("*/*.npy")}
    assert set(labels) == {"c0", "c1"}
    for case in train:
        merged, truth = labels[case.case_id], np.asarray(case.label)
        assert np.array_equal(merged[truth > 0], truth[truth > 0])  # ground truth wins
        assert not np.isin(merged[truth == 0], case.annotated).any()  # never its own organ
    label_mtimes = {p.name: p.stat().st_mtime_ns for p in (run / "stage2").glob("*/*")}

    resumed = PFLPipeline(config, run, resume=True, **kwargs)
    summary = resumed.fit()
    assert _stage1_mtimes(run) == stage1
    assert {p.name: p.stat().st_mtime_ns for p in (run / "stage2").glob("*/*")} == label_mtimes
    assert summary["epochs_completed"] == 2 and summary["best_checkpoint"] == run / "stage3" / "checkpoint_best.pt"
    final = load_checkpoint(run / "stage3" / "checkpoint_best.pt")
    assert final["classes"] == ["liver", "spleen"] and final["model"]["network.main_head.conv.weight"].shape[0] == 3
    # a FRESH network: the same weights as a plain training from scratch on the written labels
    def never(image):
        raise AssertionError("the labels are on disk: no network may run")

    pseudo = label_training_cases(train, {1: never, 2: never}, run / "stage2")
    scratch = Trainer(config, tmp_path / "scratch", train_cases=pseudo, val_cases=val, device="cpu", progress=False)
    scratch.fit()
    last = load_checkpoint(run / "stage3" / "checkpoint_last.pt")["model"]
    assert last.keys() == scratch.method.state_dict().keys()
    assert all(torch.equal(v, last[k]) for k, v in scratch.method.state_dict().items())
    assert all(torch.equal(v, last[k]) for k, v in resumed.method.state_dict().items())
    record = json.loads((run / "pipeline.json").read_text())
    assert record["stage1"]["liver"]["finished"] and record["stage2"]["finished"] and record["stage3"]["finished"]
    assert record["stage3"]["checkpoint"] == "stage3/checkpoint_best.pt"

    # the efficiency row counts every stage: two single-organ networks, labelling, the final network
    parts = [mean_epoch_time(run / d / "log.csv") for d in ("stage1/liver", "stage1/spleen", "stage3")]
    total = seconds_per_epoch(run)
    assert total == pytest.approx(sum(parts) + record["stage2"]["seconds"] / 2)
    assert seconds_per_epoch(run / "stage3") == parts[2]  # a plain run folder: its own log

    # a finished pipeline rerun with --resume retrains nothing
    again = PFLPipeline(config, run, resume=True, **kwargs)
    assert again.fit()["epochs_completed"] == 2 and _stage1_mtimes(run) == stage1


def test_a_class_every_case_annotates_needs_no_stage1_network(tmp_path, monkeypatch):
    use_sampler(monkeypatch)
    image, label = phantom_volume(3)
    train = [MemoryCase(f"f{i}", "full", "CT", (1, 2), image, label) for i in range(2)]
    pipeline = PFLPipeline(tiny_config("pfl", epochs=1, iterations_per_epoch=1), tmp_path / "run", device="cpu",
                           train_cases=train, val_cases=[], progress=False)
    assert pipeline.organs == []
    pipeline.fit()
    assert not (tmp_path / "run" / "stage1").exists()
    assert np.array_equal(np.load(tmp_path / "run" / "stage2" / "full" / "f0.npy"), label)


def partial_run_config(tmp_path):
    """The tiny phantom nnU-Net data split into two partially labelled training sets
    (liver only; spleen only), a fully labelled validation and test case."""
    config_path = write_run_config(tmp_path, epochs=1, iterations_per_epoch=2)
    config = yaml.safe_load(config_path.read_text())
    data = config["datasets"][0]["path"]
    config["datasets"] = [
        {"name": "tiny_liver", "format": "nnunet", "path": data, "role": "train",
         "label_map": {1: "liver", 2: "background"}, "cases": ["case_000"]},
        {"name": "tiny_spleen", "format": "nnunet", "path": data, "role": "train",
         "label_map": {1: "background", 2: "spleen"}, "cases": ["case_001"]},
        {"name": "tiny_val", "format": "nnunet", "path": data, "role": "validation",
         "label_map": {1: "liver", 2: "spleen"}, "cases": ["case_002"]},
        {"name": "tiny_test", "format": "nnunet", "path": data, "role": "test",
         "label_map": {1: "liver", 2: "spleen"}, "cases": ["case_002"]},
    ]
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def test_tctseg_train_pfl_runs_every_stage_and_refuses_a_silent_rerun(tmp_path, capsys):
    config_path = partial_run_config(tmp_path)
    args = ["train", str(config_path), "--method", "pfl", "--output", str(tmp_path / "pfl"), "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"predict with {tmp_path / 'pfl' / 'stage3' / 'checkpoint_best.pt'}" in out
    assert main(args) == 2  # the folder holds a run: --resume or --overwrite
    assert "pipeline.json" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert json.loads((tmp_path / "pfl" / "pipeline.json").read_text())["stage3"]["finished"]


def test_tctseg_run_pfl_end_to_end(tmp_path, capsys):
    """`tctseg run --methods pfl` trains both stage-1 networks, labels, trains the final
    network, predicts and evaluates with it; a rerun with --resume reuses every stage."""
    config_path = partial_run_config(tmp_path)
    run_dir = tmp_path / "run"
    args = ["run", str(config_path), "--methods", "pfl", "--output", str(run_dir), "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    pfl = run_dir / "pfl"
    results = json.loads((run_dir / "results.json").read_text())["pfl"]
    assert results["checkpoint"] == str(pfl / "stage3" / "checkpoint_best.pt")
    assert (pfl / "stage1" / "liver" / "checkpoint_last.pt").exists() and (pfl / "stage1" / "spleen" / "checkpoint_last.pt").exists()
    assert sorted(p.name for p in (pfl / "stage2").glob("*/*.npy")) == ["case_000.npy", "case_001.npy"]
    assert (pfl / "predictions" / "tiny_test" / "case_002.nii.gz").exists()
    assert 0.0 <= results["mean_dsc"] <= 1.0
    out = capsys.readouterr().out
    assert "PFL stage 1: the liver network" in out and "PFL stage 3" in out
    stage1 = _stage1_mtimes(pfl)
    assert main(args + ["--resume"]) == 0
    assert _stage1_mtimes(pfl) == stage1
    out = capsys.readouterr().out
    assert "the liver network finished before, reused" in out and "final network finished before, reused" in out


@pytest.mark.slow
def test_sigkill_in_stage1_and_in_stage3_then_resume(tmp_path):
    """A real kill of `tctseg train --method pfl` inside the second stage-1 network and again
    inside the final network: each --resume keeps what was finished and continues the rest."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from _processes import kill_when

    repo = Path(__file__).resolve().parents[1]
    config_path = partial_run_config(tmp_path)
    config = yaml.safe_load(config_path.read_text())
    config["train"].update(epochs=3, iterations_per_epoch=12, val_every=10)
    config_path.write_text(yaml.safe_dump(config))
    run = tmp_path / "pfl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo / "src")}
    command = [sys.executable, "-m", "tctseg", "train", str(config_path), "--method", "pfl", "--output", str(run),
               "--device", "cpu", "--no-progress"]

    kill_when(command, lambda: (run / "stage1" / "spleen" / "checkpoint_last.pt").exists(), 0.3, env)
    liver = (run / "stage1" / "liver" / "checkpoint_last.pt").stat().st_mtime_ns
    assert load_checkpoint(run / "stage1" / "spleen" / "checkpoint_last.pt")["epoch"] in (1, 2)

    kill_when([*command, "--resume"], lambda: (run / "stage3" / "checkpoint_last.pt").exists(), 0.3, env)
    assert (run / "stage1" / "liver" / "checkpoint_last.pt").stat().st_mtime_ns == liver
    assert load_checkpoint(run / "stage1" / "spleen" / "checkpoint_last.pt")["epoch"] == 3
    labels = {p.name: p.stat().st_mtime_ns for p in (run / "stage2").glob("*/*")}
    assert len(labels) == 4  # two cases: .npy and .json each

    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "liver network finished before, reused" in resumed.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (run / "stage2").glob("*/*")} == labels
    with (run / "stage3" / "log.csv").open() as f:
        assert [row.split(",")[0] for row in f.read().splitlines()[1:]] == ["1", "2", "3"]
    assert load_checkpoint(run / "stage3" / "checkpoint_last.pt")["epoch"] == 3


def test_stage1_epochs_shortens_the_single_organ_networks(tmp_path, monkeypatch):
    """issue 28, item 4: method.options.stage1_epochs (default the full schedule) so that PFL
    can cost the paper's ≈ 2 × TAL (Tab. 10); the efficiency row counts each network's share."""
    use_sampler(monkeypatch)
    train, val = memory_cases()
    config = tiny_config("pfl", epochs=2, iterations_per_epoch=1)
    assert stage1_epochs(config) == 2  # default: the full schedule, as before
    for wrong in (0, 3):
        config.method.options = {"stage1_epochs": wrong}
        with pytest.raises(ConfigError, match=rf"^method.options.stage1_epochs: {wrong} is not between 1 and train.epochs \(2\)"):
            build_method(config)
    config.method.options = {"stage1_epochs": 1}
    run = tmp_path / "pfl"
    PFLPipeline(config, run, device="cpu", train_cases=train, val_cases=val, progress=False).fit()
    for organ in ("liver", "spleen"):
        assert load_checkpoint(run / "stage1" / organ / "checkpoint_last.pt")["epoch"] == 1
    assert load_checkpoint(run / "stage3" / "checkpoint_last.pt")["epoch"] == 2
    record = json.loads((run / "pipeline.json").read_text())
    assert record["stage1"]["liver"]["epochs"] == record["stage1"]["spleen"]["epochs"] == 1 and record["epochs"] == 2
    organs = [mean_epoch_time(run / "stage1" / organ / "log.csv") for organ in ("liver", "spleen")]
    final = mean_epoch_time(run / "stage3" / "log.csv")
    # each single-organ network's time is spread over the final network's 2 epochs
    assert seconds_per_epoch(run) == pytest.approx(sum(organs) / 2 + final + record["stage2"]["seconds"] / 2)


def test_a_shorter_stage1_than_a_network_has_done_names_the_option(tmp_path, monkeypatch):
    use_sampler(monkeypatch)
    train, val = memory_cases()
    config = tiny_config("pfl", epochs=2, iterations_per_epoch=1)
    run = tmp_path / "pfl"
    with _interrupted_as_stage_starts(2):
        PFLPipeline(config, run, device="cpu", train_cases=train, val_cases=val, progress=False).fit()
    record = json.loads((run / "pipeline.json").read_text())
    record["stage1"] = {}  # as if killed after the liver network's last checkpoint, before its record
    (run / "pipeline.json").write_text(json.dumps(record))
    config.method.options = {"stage1_epochs": 1}
    with pytest.raises(ConfigError, match=r"^method.options.stage1_epochs: 1, but PFL's liver network in .* has "
                                          r"completed 2 epochs; resume with stage1_epochs >= 2"):
        PFLPipeline(config, run, resume=True, device="cpu", train_cases=train, val_cases=val, progress=False).fit()
