"""`tctseg run` end to end on a tiny nnU-Net dataset: train, predict the test set, evaluate, report."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from tctseg.cli import main
from tctseg.config import config_from_dict
from tctseg.experiment import TestCase as Case  # not collected as a test class
from tctseg.experiment import evaluate_test_cases, predict_test_cases
from tctseg.methods.task_prompted import TaskPromptedMethod

from _training_data import CLASSES, write_run_config


def test_run_trains_predicts_evaluates_and_reports(tmp_path, capsys):
    config_path = write_run_config(tmp_path, epochs=1, iterations_per_epoch=2)
    config = yaml.safe_load(config_path.read_text())
    test = dict(config["datasets"][1], name="tiny_test", role="test")
    config["datasets"].append(test)
    config_path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"

    code = main(["run", str(config_path), "--methods", "tct,tal", "--output", str(run_dir), "--no-progress"])
    assert code == 0, capsys.readouterr().err

    results = json.loads((run_dir / "results.json").read_text())
    assert list(results) == ["tct", "tal"]
    for method, r in results.items():
        assert set(r["per_class"]) == set(CLASSES)
        assert 0.0 <= r["mean_dsc"] <= 1.0 and r["mean_hd95"] >= 0.0 and r["wall_time_s"] > 0
        prediction = run_dir / method / "predictions" / "tiny_test" / "case_002.nii.gz"
        image = nib.load(tmp_path / "raw" / "imagesTr" / "case_002_0000.nii.gz")
        written = nib.load(prediction)
        # the prediction lies on the scan's own grid, in global ids
        assert written.shape == image.shape and np.allclose(written.affine, image.affine)
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2}
        metrics = json.loads((run_dir / method / "metrics" / "metrics.json").read_text())
        assert metrics["mean_dsc"] == r["mean_dsc"]
    truth = nib.load(run_dir / "ground_truth" / "tiny_test" / "case_002.nii.gz")
    source = nib.load(tmp_path / "raw" / "labelsTr" / "case_002.nii.gz")
    assert np.array_equal(np.asarray(truth.dataobj), np.asarray(source.dataobj))
    html = (run_dir / "report.html").read_text()
    assert "tct" in html and "tal" in html and "data:image/png;base64," in html
    out = capsys.readouterr().out
    assert "report:" in out and "mean DSC" in out


class TwoOverlappingTasks(TaskPromptedMethod):
    """A task-prompted stand-in with known maps: on the normalised CT value v,
    liver logit 20·(v − 0.25), spleen logit 20·(v − 0.75); both above ½ where v = 1."""

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = 2
        self.network = torch.nn.Conv3d(1, 2, 1)
        with torch.no_grad():
            self.network.weight.copy_(torch.tensor([20.0, 20.0]).view(2, 1, 1, 1, 1))
            self.network.bias.copy_(torch.tensor([-5.0, -15.0]))

    def task_logits(self, image, batch=None):
        return self.network(image)


def test_task_prompted_methods_are_scored_per_task(tmp_path):
    """run/compare's predict + evaluate for a task-prompted method: each class on its own
    σ > ½ mask (overlaps allowed), while the label map users get is the argmax."""
    config = config_from_dict({
        "classes": ["liver", "spleen"],
        "datasets": [{"name": "kits", "format": "kits19", "path": "unused"}],  # CT
        "preprocessing": {"spacing": [1.0, 1.0, 1.0]},
        "network": {"width": 4, "depth": 3, "channels_last": False},
        "train": {"patch_size": [8, 8, 8]},
    })
    hu = np.full((8, 4, 4), -1024.0, np.float32)  # CT scaling: -1024 → v = 0, 0 → 0.5, 1024 → 1
    hu[2:4], hu[4:6] = 0.0, 1024.0
    truth = np.zeros((8, 4, 4), np.uint8)
    truth[2:4], truth[4:6] = 1, 2  # liver x 2–3, spleen x 4–5: 32 voxels each
    nib.save(nib.Nifti1Image(hu, np.eye(4)), tmp_path / "c.nii.gz")
    nib.save(nib.Nifti1Image(truth, np.eye(4)), tmp_path / "c_gt.nii.gz")
    cases = [Case("set", "c", tmp_path / "c.nii.gz", tmp_path / "c_gt.nii.gz", ("liver", "spleen"))]

    predict_test_cases((TwoOverlappingTasks(), config), cases, tmp_path / "m", device="cpu", progress=False,
                       task_masks=True)
    folder = tmp_path / "m" / "predictions" / "set"
    labels = np.asarray(nib.load(folder / "c.nii.gz").dataobj)
    masks = np.asarray(nib.load(folder / "c_tasks.nii.gz").dataobj)
    # liver σ ≈ 0.993 at v = 0.5 and ≈ 1 at v = 1; spleen σ ≈ 0.993 only at v = 1
    expected_masks = np.zeros((8, 4, 4, 2), np.uint8)
    expected_masks[2:6, ..., 0] = 1
    expected_masks[4:6, ..., 1] = 1
    assert np.array_equal(masks, expected_masks)
    expected_labels = np.zeros((8, 4, 4), np.uint8)
    expected_labels[2:6] = 1  # where both claim a voxel the more probable task (liver) wins
    assert np.array_equal(labels, expected_labels)

    per_task = evaluate_test_cases(config, cases, tmp_path / "m", task_masks=True).per_class()
    merged = evaluate_test_cases(config, cases, tmp_path / "m", task_masks=False).per_class()
    assert per_task["liver"]["dsc"] == pytest.approx(2 * 32 / (64 + 32)) == merged["liver"]["dsc"]
    assert per_task["spleen"]["dsc"] == 1.0 and merged["spleen"]["dsc"] == 0.0


class AskedTasks(TwoOverlappingTasks):
    """TwoOverlappingTasks that records the tasks each window is asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[int, ...] | None] = []

    def task_logits_for(self, image, tasks=None):
        self.asked.append(tasks)
        return super().task_logits_for(image, tasks)


def test_test_cases_are_predicted_with_their_datasets_tasks(tmp_path):
    """run/compare hand each test case the global ids of the classes its dataset annotates
    (Hermes' evaluation, issue 28 item 3); without the classes, every task (a new scan)."""
    config = config_from_dict({
        "classes": ["liver", "spleen"],
        "datasets": [{"name": "kits", "format": "kits19", "path": "unused"}],
        "preprocessing": {"spacing": [1.0, 1.0, 1.0]},
        "network": {"width": 4, "depth": 3, "channels_last": False},
        "train": {"patch_size": [8, 8, 8]},
    })
    hu = np.full((8, 4, 4), -1024.0, np.float32)
    hu[2:6] = 0.0
    nib.save(nib.Nifti1Image(hu, np.eye(4)), tmp_path / "c.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 4, 4), np.uint8), np.eye(4)), tmp_path / "c_gt.nii.gz")
    cases = [Case("spleen_only", "a", tmp_path / "c.nii.gz", tmp_path / "c_gt.nii.gz", ("spleen",)),
             Case("both", "b", tmp_path / "c.nii.gz", tmp_path / "c_gt.nii.gz", ("liver", "spleen"))]
    method = AskedTasks()
    predict_test_cases((method, config), cases, tmp_path / "m", device="cpu", progress=False, task_masks=True,
                       classes=config.classes)
    assert method.asked == [(2,), (1, 2)]  # one window each
    method.asked.clear()
    predict_test_cases((method, config), cases, tmp_path / "n", device="cpu", progress=False, task_masks=True)
    assert method.asked == []  # task_logits, every task


def test_run_records_the_clip_embeddings_in_results_and_checkpoint(tmp_path, capsys):
    """issue 28, item 4: results.json says which text embeddings CLIP-Driven was made with, as
    its checkpoint does."""
    import hashlib

    from tctseg.checkpoint import load_checkpoint, recorded_sources

    config_path = write_run_config(tmp_path, epochs=1, iterations_per_epoch=1)
    config = yaml.safe_load(config_path.read_text())
    config["datasets"].append(dict(config["datasets"][1], name="tiny_test", role="test"))
    organs = tmp_path / "organs.pt"
    torch.save(torch.randn(len(CLASSES), 8, generator=torch.Generator().manual_seed(0)), organs)
    config["method"] = {"name": "clip", "options": {"text_embeddings": str(organs)}}
    config_path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    assert main(["run", str(config_path), "--methods", "clip", "--output", str(run_dir), "--no-progress"]) == 0, \
        capsys.readouterr().err
    result = json.loads((run_dir / "results.json").read_text())["clip"]
    record = result["text_embeddings"]
    assert record["source"] == "file" and record["path"] == str(organs.resolve()) and record["dim"] == 8
    assert record["sha256"] == hashlib.sha256(organs.read_bytes()).hexdigest()
    assert recorded_sources(load_checkpoint(result["checkpoint"])) == {"text_embeddings": record}
