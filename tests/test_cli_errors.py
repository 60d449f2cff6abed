"""Every command answers bad input with exit status 2 and ONE line ``tctseg <cmd>: error: ...``
naming the file or key, never a traceback; ``--debug`` shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from _training_data import write_run_config

from tctseg.cli import main
from tctseg.errors import TctsegError

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _edit_config(path: Path, **changes) -> Path:
    raw = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    path.write_text(yaml.safe_dump(raw))
    return path


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """command -> (argv, text the one-line message must contain)."""
    config = write_run_config(tmp_path)
    wrong_type = tmp_path / "wrong_type.yaml"
    wrong_type.write_text(config.read_text())
    _edit_config(wrong_type, train__epochs="five")
    unknown_key = tmp_path / "unknown_key.yaml"
    unknown_key.write_text(config.read_text())
    _edit_config(unknown_key, train__epochz=3)
    (tmp_path / "raw" / "dataset.json").write_text("{not json")
    corrupt_checkpoint = tmp_path / "model.pt"
    corrupt_checkpoint.write_bytes(b"PK\x03\x04 not really a zip")
    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "case_000.nii.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    ground_truth = tmp_path / "gt"
    ground_truth.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), ground_truth / "case_000.nii.gz")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    return {
        "prepare": (["prepare", str(config), "--quiet"], "dataset.json: cannot read dataset.json"),
        "train": (["train", str(wrong_type), "--no-progress"], "train.epochs: expected int, got 'five'"),
        "predict": (["predict", str(corrupt_checkpoint), str(preds), str(tmp_path / "out")], "model.pt: not a readable tctseg checkpoint"),
        "evaluate": (["evaluate", str(preds), str(ground_truth), "--classes", "liver,spleen",
                      "--out", str(tmp_path / "metrics"), "--no-progress"], "preds/case_000.nii.gz: cannot read"),
        "report": (["report", str(tmp_path / "no_run")], "no_run: run directory not found"),
        "phantom": (["phantom", str(blocker / "phantom"), "--size", "tiny"], f"{blocker / 'phantom'}: cannot create the folder"),
        "run": (["run", str(unknown_key), "--no-progress"], "train.epochz: unknown key"),
    }


COMMANDS = ["prepare", "train", "predict", "evaluate", "report", "phantom", "run"]


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_input_gives_exit_2_and_one_line_naming_the_file_or_key(tmp_path, capsys, command):
    argv, expected = _bad_inputs(tmp_path)[command]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith(f"tctseg {command}: error: ")]
    assert len(error_lines) == 1, captured.err
    assert expected in error_lines[0], error_lines[0]
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize("command", COMMANDS)
def test_debug_lets_the_error_through_with_its_traceback(tmp_path, command):
    argv, expected = _bad_inputs(tmp_path)[command]
    with pytest.raises(TctsegError, match=expected.replace("[", r"\[").replace("(", r"\(")):
        main(["--debug", *argv])
    with pytest.raises(TctsegError):
        main([argv[0], "--debug", *argv[1:]])


def train_tiny_model(run_dir):
    """A one-step TCT model in ``run_dir`` (checkpoint_last.pt) for the predict cases below."""
    from _training_data import memory_cases, tiny_config

    from tctseg.training import Trainer

    train, _ = memory_cases()
    Trainer(tiny_config(epochs=1, iterations_per_epoch=1), run_dir, device="cpu", train_cases=train,
            val_cases=[], progress=False).fit()


def scan_values() -> np.ndarray:
    """A small CT-like volume; not constant (predict refuses a scan with nothing in it)."""
    return np.random.default_rng(0).uniform(-200.0, 300.0, (24, 24, 12)).astype(np.float32)


def test_a_scan_that_cannot_be_read_is_reported_by_predict_without_traceback(tmp_path, capsys):
    train_tiny_model(tmp_path / "run")
    scans = tmp_path / "scans"
    scans.mkdir()
    nib.save(nib.Nifti1Image(scan_values(), np.eye(4)), scans / "good.nii.gz")
    (scans / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 cut short")
    code = main(["predict", str(tmp_path / "run" / "checkpoint_last.pt"), str(scans), str(tmp_path / "out"),
                 "--modality", "CT", "--no-progress"])
    out = capsys.readouterr()
    assert code == 1  # the readable scan was predicted; the exit status says one failed
    assert "1 written" in out.out and "1 failed" in out.out
    assert "broken.nii.gz: cannot read NIfTI file" in out.out
    assert "Traceback" not in out.out + out.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.nii.gz", "index.json"]


def test_a_scan_in_metres_is_reported_and_the_scans_after_it_are_still_predicted(tmp_path, capsys):
    """A header with 1 m voxels would need 4e14 bytes after resampling: one line, the others predicted."""
    train_tiny_model(tmp_path / "run")
    scans = tmp_path / "scans"
    scans.mkdir()
    for name, spacing in (("a_good", 1.0), ("b_metres", 1000.0), ("c_good", 1.0)):
        nib.save(nib.Nifti1Image(scan_values(), np.diag([spacing] * 3 + [1.0])), scans / f"{name}.nii.gz")
    code = main(["predict", str(tmp_path / "run" / "checkpoint_last.pt"), str(scans), str(tmp_path / "out"),
                 "--modality", "CT", "--no-progress"])
    out = capsys.readouterr()
    assert code == 1 and "2 written" in out.out and "1 failed" in out.out
    failed = [line for line in out.out.splitlines() if "b_metres" in line]
    # the reason once, as it happens (the path once in it); the summary names the case only
    assert len(failed) == 2 and failed[1] == "  failed: b_metres", failed
    assert "b_metres.nii.gz: resampling its [24, 24, 12] voxels of [1000.0, 1000.0, 1000.0] mm" in failed[0]
    assert "would need shape [24000, 24000, 4000]" in failed[0] and failed[0].count("b_metres.nii.gz") == 1
    assert "Traceback" not in out.out + out.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_good.nii.gz", "c_good.nii.gz", "index.json"]


def test_a_sheared_scan_is_predicted_with_one_warning_line_naming_it(tmp_path, capsys):
    train_tiny_model(tmp_path / "run")
    scans = tmp_path / "scans"
    scans.mkdir()
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    affine[0, 2] = 0.75  # the slice axis leans 14° into x
    nib.save(nib.Nifti1Image(scan_values(), affine), scans / "sheared.nii.gz")
    code = main(["predict", str(tmp_path / "run" / "checkpoint_last.pt"), str(scans), str(tmp_path / "out"),
                 "--modality", "CT", "--no-progress"])
    out = capsys.readouterr()
    assert code == 0
    warned = [line for line in out.err.splitlines() if "sheared" in line]
    assert len(warned) == 1, out.err
    assert warned[0].startswith(f"tctseg predict: warning: {scans / 'sheared.nii.gz'}: the affine is sheared (voxel axes 14°")
    assert np.allclose(nib.load(tmp_path / "out" / "sheared.nii.gz").affine, affine)  # written on the scan's own grid


def test_a_dicom_series_with_a_missing_slice_is_one_line_without_itk_warnings(tmp_path, capfd):
    """The geometry check runs before ITK reads the series, so ITK's multi-line warning never shows."""
    import shutil

    train_tiny_model(tmp_path / "run")
    series = tmp_path / "scans" / "gap"
    shutil.copytree(REPO.parent / "shared" / "data" / "ct-example" / "dicom_series", series)
    sorted(series.iterdir())[9].unlink()
    capfd.readouterr()
    code = main(["predict", str(tmp_path / "run" / "checkpoint_last.pt"), str(tmp_path / "scans"), str(tmp_path / "out"),
                 "--modality", "CT", "--no-progress"])
    out = capfd.readouterr()  # file descriptors: ITK writes its warnings from C++
    assert code == 1 and "1 failed" in out.out
    assert "WARNING" not in out.err and "Traceback" not in out.out + out.err, out.err
    failed = [line for line in out.out.splitlines() if "gap" in line and "failed" in line]
    assert len(failed) == 2 and failed[1] == "  failed: gap", out.out
    assert "are 4.000 mm apart, the series' other slices 2.000 mm (about 1 slice(s) missing" in failed[0], out.out


@pytest.mark.parametrize("override, message", [
    ("train.num_workers=-1", "train.num_workers: must be >= 0, got -1"),
    ("train.weight_decay=-1", "train.weight_decay: must be >= 0, got -1.0"),
    ("train.patch_size=[4096,4096,4096]", "train.patch_size [4096, 4096, 4096] × train.batch_size 1 × network.width 4 "
                                          "(network.depth 3): a training step would need about 2.64e+04 GB"),
    ("network.width=1000000", "network.width: must be in 1..512 (the paper's is 16), got 1000000"),
    ("preprocessing.ct_clip=[1024,-1024]", "preprocessing.ct_clip: the low bound must be below the high one"),
    ("preprocessing.mr_percentiles=[99.5,0.5]", "preprocessing.mr_percentiles: expected 0 <= low < high <= 100"),
    ("method.options.exclusion_wieght=5", "method.options.exclusion_wieght: unknown option (did you mean exclusion_weight?)"),
], ids=["num-workers", "weight-decay", "patch-memory", "width", "ct-clip", "mr-percentiles", "method-option"])
def test_a_setting_out_of_range_is_one_line_before_anything_is_prepared_or_written(tmp_path, capsys, override, message):
    """issue 31, items 7, 12, 13: each of these ran (or allocated 256 GiB after preparing the
    cache, or made every voxel 1.0, or ignored the option); now `train` and `prepare` stop at once."""
    config = write_run_config(tmp_path)
    for argv in (["train", str(config), "--no-progress", "--device", "cpu"], ["prepare", str(config), "--quiet"]):
        code = main([*argv, "--set", override])
        captured = capsys.readouterr()
        lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, captured.out + captured.err
        assert lines[0].startswith(f"tctseg {argv[0]}: error: {config}: {message}"), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "raw"]  # no cache, no run folder


def test_the_installed_command_prints_no_traceback_unless_debug(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [liver]\ndatasets: []\ntrain: {lr: -1}\n")
    plain = subprocess.run([sys.executable, "-m", "tctseg", "train", str(bad)], env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2
    assert plain.stderr.strip() == f"tctseg train: error: {bad}: train.lr: must be > 0, got -1.0"
    debug = subprocess.run([sys.executable, "-m", "tctseg", "--debug", "train", str(bad)], env=env, capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr and "ConfigError" in debug.stderr
