"""`tctseg run` end to end on a tiny nnU-Net dataset: train, predict the test set, evaluate, report."""

import json

import nibabel as nib
import numpy as np
import yaml

from tctseg.cli import main

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
