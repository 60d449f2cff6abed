"""`tctseg predict`: outputs keep the input geometry (RAS, LPS, DICOM), bad inputs are reported
by name, inputs are never overwritten, writes are atomic, reruns skip finished cases."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from tctseg.cli import main
from tctseg.config import config_from_dict
from tctseg.data.io import load_volume, save_nifti
from tctseg.errors import ConfigError, DataError, OutputError
from tctseg.files.outputs import write_atomically
from tctseg.inference import PredictionInput, find_cases, predict_cases, training_modality
from tctseg.methods import build_method
from tctseg.methods.task_prompted import TaskPromptedMethod

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct-example"
CT = DATA / "ct.nii.gz"
DICOM = DATA / "dicom_series"
needs_data = pytest.mark.skipif(not CT.is_file() or not DICOM.is_dir(), reason=f"real CT example not found at {DATA}")


def tiny_config(**preprocessing) -> object:
    return config_from_dict(
        {
            "classes": ["bright", "edge"],
            "datasets": [{"name": "kits", "format": "kits19", "path": "unused"}],
            "network": {"width": 4, "depth": 3},
            # 8 mm keeps the real CT at ~46×38×42 prepared voxels: a few windows only
            "preprocessing": {"spacing": [8.0, 8.0, 8.0], **preprocessing},
            "train": {"patch_size": [32, 32, 16]},
        }
    )


class IntensityAndEdge(nn.Module):
    """Stand-in method with known, orientation-SENSITIVE behaviour: class 1 where the normalised
    CT is above 0.55 (≈ +100 HU), class 2 where intensity rises steeply along +X. A pipeline
    that fed the network a wrongly oriented volume would move class 2 to other voxels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 3, padding=1)
        weight = torch.zeros(3, 1, 3, 3, 3)
        weight[1, 0, 1, 1, 1] = 20.0
        weight[2, 0, 2, 1, 1], weight[2, 0, 0, 1, 1] = 30.0, -30.0
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            self.conv.bias.copy_(torch.tensor([0.0, -11.0, -3.0]))

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image)


def write_lps_copy(path: Path) -> Path:
    """The real CT with its first two voxel axes reversed and the affine fixed to match, so
    every voxel keeps its world position (RAS file → LPS file)."""
    image = nib.load(str(CT))
    array = np.asarray(image.dataobj)[::-1, ::-1, :]
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = array.shape[0] - 1, array.shape[1] - 1  # new index i' = n-1-i
    affine = image.affine @ flip
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array), affine), str(path))
    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    return path


@pytest.fixture(scope="module")
def real_predictions(tmp_path_factory):
    """One run over the RAS CT, its LPS copy, the DICOM series and a truncated file."""
    if not CT.is_file() or not DICOM.is_dir():
        pytest.skip(f"real CT example not found at {DATA}")
    inputs_dir = tmp_path_factory.mktemp("inputs")
    lps = write_lps_copy(inputs_dir / "ct_lps.nii.gz")
    broken = inputs_dir / "broken.nii.gz"
    broken.write_bytes(CT.read_bytes()[:5000])  # a truncated download
    out = tmp_path_factory.mktemp("predictions")
    inputs = [CT, broken, lps, DICOM]
    results = predict_cases((IntensityAndEdge(), tiny_config()), inputs, out, progress=False)
    return {r.case_id: r for r in results}, out, lps, broken


@needs_data
def test_ras_ct_prediction_has_the_input_shape_and_affine(real_predictions):
    results, out, _, _ = real_predictions
    assert results["ct"].status == "written"
    source = nib.load(str(CT))
    pred = nib.load(str(out / "ct.nii.gz"))
    assert pred.shape == source.shape == (122, 101, 112)
    np.testing.assert_allclose(pred.affine, source.affine, atol=1e-5)
    labels = np.asarray(pred.dataobj)
    assert labels.dtype == np.uint8
    counts = np.bincount(labels.ravel(), minlength=3)
    assert counts.size == 3 and (counts > 0.01 * labels.size).all()  # all three classes, so agreement tests mean something


@needs_data
def test_lps_copy_keeps_its_own_geometry_and_agrees_with_ras_in_world_space(real_predictions):
    results, out, lps, _ = real_predictions
    assert results["ct_lps"].status == "written"
    pred_lps = nib.load(str(out / "ct_lps.nii.gz"))
    assert pred_lps.shape == nib.load(str(lps)).shape
    np.testing.assert_allclose(pred_lps.affine, nib.load(str(lps)).affine, atol=1e-5)
    ras_labels = np.asarray(nib.load(str(out / "ct.nii.gz")).dataobj)
    lps_labels_flipped_back = np.asarray(pred_lps.dataobj)[::-1, ::-1, :]
    disagree = float(np.mean(ras_labels != lps_labels_flipped_back))
    assert disagree < 1e-3
    # the stand-in is orientation-sensitive: un-flipped, the two maps would NOT agree
    assert float(np.mean(ras_labels != np.asarray(pred_lps.dataobj))) > 0.01


@needs_data
def test_dicom_series_prediction_has_load_volume_shape_and_affine(real_predictions):
    results, out, _, _ = real_predictions
    assert results["dicom_series"].status == "written"
    series = load_volume(DICOM)
    pred = nib.load(str(out / "dicom_series.nii.gz"))
    assert pred.shape == series.shape == (512, 512, 20)
    np.testing.assert_allclose(pred.affine, series.affine, atol=1e-4)


@needs_data
def test_unreadable_input_is_reported_by_name_and_the_rest_still_run(real_predictions):
    results, out, _, broken = real_predictions
    failed = results["broken"]
    assert failed.status == "failed" and not failed.ok
    assert str(broken) in failed.error
    assert not (out / "broken.nii.gz").exists()
    assert {results[c].status for c in ("ct", "ct_lps", "dicom_series")} == {"written"}
    index = json.loads((out / "index.json").read_text())
    assert [e["case_id"] for e in index] == ["ct", "ct_lps", "dicom_series"]
    assert index[0]["image"] == str(CT.resolve()) and index[0]["prediction"] == str((out / "ct.nii.gz").resolve())
    # no temporary files left behind
    assert sorted(p.name for p in out.iterdir()) == ["ct.nii.gz", "ct_lps.nii.gz", "dicom_series.nii.gz", "index.json"]


# --------------------------------------------------------------------------- small synthetic volumes


def write_volume(path: Path, shape=(40, 36, 24), spacing=(4.0, 4.0, 8.0), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    hu = rng.normal(0.0, 400.0, size=shape).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-80.0, -70.0, 20.0)
    nib.save(nib.Nifti1Image(hu, affine), str(path))
    return path


def save_checkpoint_of(method: nn.Module, config, path: Path) -> Path:
    torch.save({"model": method.state_dict(), "config": config.to_dict(), "classes": config.classes, "epoch": 0}, path)
    return path


def test_cli_predicts_a_folder_from_a_checkpoint_and_exits_1_when_a_case_fails(tmp_path, capsys):
    config = tiny_config(spacing=[4.0, 4.0, 8.0])
    torch.manual_seed(0)
    checkpoint = save_checkpoint_of(build_method(config), config, tmp_path / "model.pt")
    scans = tmp_path / "scans"
    scans.mkdir()
    write_volume(scans / "a_0000.nii.gz")
    (scans / "b.nii.gz").write_bytes(gzip.compress(b"not a nifti header"))
    out = tmp_path / "out"
    status = main(["predict", str(checkpoint), str(scans), str(out), "--no-progress", "--lcc", "--probabilities"])
    captured = capsys.readouterr()
    assert status == 1
    assert "b.nii.gz" in captured.out + captured.err
    assert "predict: on cpu (" in captured.out  # the CLI says which device it uses (no CUDA here)
    pred = nib.load(str(out / "a.nii.gz"))  # nnU-Net channel suffix _0000 dropped from the case id
    source = nib.load(str(scans / "a_0000.nii.gz"))
    assert pred.shape == source.shape and np.allclose(pred.affine, source.affine)
    probs = nib.load(str(out / "a_probabilities.nii.gz"))
    assert probs.shape == (40, 36, 24, 3)
    assert np.allclose(probs.get_fdata().sum(-1), 1.0, atol=3 * 0.5 / 255)  # uint8-scaled, rounding per class
    assert not (out / "b.nii.gz").exists()


class TwoIntensityTasks(TaskPromptedMethod):
    """Task-prompted stand-in (one sigmoid per class) on the normalised CT value v: task 1
    logit 10·(v − 0.5), task 2 logit 30·(v − 0.55). Both masks hold above v = 0.55 (overlap);
    task 2 is the more probable above v = 0.575."""

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = 2
        self.network = nn.Conv3d(1, 2, 1)
        with torch.no_grad():
            self.network.weight.copy_(torch.tensor([10.0, 30.0]).view(2, 1, 1, 1, 1))
            self.network.bias.copy_(torch.tensor([-5.0, -16.5]))

    def task_logits(self, image: torch.Tensor, batch=None) -> torch.Tensor:
        return self.network(image)


def test_task_prompted_method_writes_each_tasks_own_mask_and_their_argmax(tmp_path, capsys):
    (tmp_path / "scans").mkdir()
    scan = write_volume(tmp_path / "scans" / "a.nii.gz")
    out = tmp_path / "out"
    config = tiny_config(spacing=[4.0, 4.0, 8.0])  # the scan's own spacing: no resampling
    results = predict_cases((TwoIntensityTasks(), config), [scan], out, save_task_masks=True,
                            save_probabilities=True, progress=False)
    assert results[0].status == "written" and results[0].task_masks == out / "a_tasks.nii.gz"
    labels = np.asarray(nib.load(str(out / "a.nii.gz")).dataobj)
    masks = np.asarray(nib.load(str(out / "a_tasks.nii.gz")).dataobj)
    probs = nib.load(str(out / "a_probabilities.nii.gz")).get_fdata()
    assert masks.shape == probs.shape == (40, 36, 24, 2) and set(np.unique(masks)) == {0, 1}
    # by hand from the scan: v = clip((HU + 1024) / 2048, 0, 1)
    v = np.clip((nib.load(str(scan)).get_fdata() + 1024.0) / 2048.0, 0.0, 1.0)
    far = (np.abs(v - 0.5) > 1e-3) & (np.abs(v - 0.55) > 1e-3) & (np.abs(v - 0.575) > 1e-3)  # off the thresholds
    assert far.mean() > 0.95
    assert np.array_equal((masks[..., 0] == 1)[far], (v > 0.5)[far])
    assert np.array_equal((masks[..., 1] == 1)[far], (v > 0.55)[far])
    overlap = (masks[..., 0] == 1) & (masks[..., 1] == 1)
    assert overlap.mean() > 0.1  # masks overlap; a label map cannot show it
    expected = np.where(v > 0.575, 2, np.where(v > 0.5, 1, 0))
    assert np.array_equal(labels[far], expected[far])
    assert {0, 1, 2} <= set(np.unique(labels))
    # the probabilities file holds the N task probabilities σ_c
    assert np.abs(probs[..., 0] - 1 / (1 + np.exp(-10 * (v - 0.5))))[far].max() < 1 / 255 + 1e-3
    index = json.loads((out / "index.json").read_text())
    assert index[0]["task_masks"] == str((out / "a_tasks.nii.gz").resolve())
    # a softmax method has no per-task masks: refused before any work
    tct = save_checkpoint_of(build_method(config), config, tmp_path / "tct.pt")
    assert main(["predict", str(tct), str(scan), str(tmp_path / "out2"), "--no-progress", "--task-masks"]) == 2
    assert "--task-masks: method 'tct'" in capsys.readouterr().err
    assert not (tmp_path / "out2" / "a.nii.gz").exists()


def test_rerun_skips_finished_cases_unless_overwrite(tmp_path):
    config = tiny_config(spacing=[4.0, 4.0, 8.0])
    scan = write_volume(tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    first = predict_cases((IntensityAndEdge(), config), [scan], out, progress=False)
    assert first[0].status == "written"
    stamp = (out / "scan.nii.gz").stat().st_mtime_ns
    os.utime(out / "scan.nii.gz", ns=(stamp - 10**9, stamp - 10**9))
    second = predict_cases((IntensityAndEdge(), config), [scan], out, progress=False)
    assert second[0].status == "skipped"
    assert (out / "scan.nii.gz").stat().st_mtime_ns == stamp - 10**9
    third = predict_cases((IntensityAndEdge(), config), [scan], out, overwrite=True, progress=False)
    assert third[0].status == "written"
    assert (out / "scan.nii.gz").stat().st_mtime_ns != stamp - 10**9


def test_output_folder_equal_to_the_input_folder_is_refused(tmp_path):
    scan = write_volume(tmp_path / "scan.nii.gz")
    before = scan.read_bytes()
    with pytest.raises(OutputError, match="scan.nii.gz"):
        predict_cases((IntensityAndEdge(), tiny_config()), [scan], tmp_path, progress=False)
    # the same file given as a labelled case whose prediction name would be the input's name
    with pytest.raises(OutputError):
        predict_cases((IntensityAndEdge(), tiny_config()), [("scan", scan, None, "d")], tmp_path, progress=False)
    assert scan.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_output_folder_equal_to_a_folder_of_series_given_as_input_is_refused(tmp_path):
    series = tmp_path / "patient1"
    series.mkdir()
    (series / "slice1.dcm").write_bytes(b"\0" * 128 + b"DICM")
    # its outputs (tmp_path/patient1.nii.gz) would become inputs of the next run
    with pytest.raises(OutputError, match="input folder"):
        predict_cases((IntensityAndEdge(), tiny_config()), [tmp_path], tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patient1"]


def test_output_inside_a_dicom_series_folder_is_refused(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    (series / "slice1.dcm").write_bytes(b"\0" * 128 + b"DICM")
    with pytest.raises(OutputError, match="DICOM"):
        predict_cases((IntensityAndEdge(), tiny_config()), [series], series / "out", progress=False)


def test_saving_over_a_protected_input_is_refused(tmp_path):
    scan = write_volume(tmp_path / "scan.nii.gz")
    before = scan.read_bytes()
    with pytest.raises(OutputError, match="input"):
        save_nifti(np.zeros((2, 2, 2), np.uint8), np.eye(4), scan, protect=[scan])
    assert scan.read_bytes() == before


def test_a_write_that_fails_midway_leaves_no_file_at_the_final_path(tmp_path):
    target = tmp_path / "case.nii.gz"

    def write_half_then_die(tmp: Path) -> None:
        tmp.write_bytes(b"half a file")
        raise KeyboardInterrupt  # as when the run is killed

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, write_half_then_die)
    assert list(tmp_path.iterdir()) == []
    # an earlier complete file survives a failed rewrite untouched
    target.write_bytes(b"complete")
    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, write_half_then_die)
    assert target.read_bytes() == b"complete" and list(tmp_path.iterdir()) == [target]


def test_labelled_inputs_carry_label_dataset_and_modality_into_the_index(tmp_path):
    scan = write_volume(tmp_path / "scan_0000.nii.gz")
    label = tmp_path / "scan_label.nii.gz"
    out = tmp_path / "out"
    results = predict_cases(
        (IntensityAndEdge(), tiny_config(spacing=[4.0, 4.0, 8.0])),
        [PredictionInput("case7", scan, label, "phantom")],
        out,
        progress=False,
    )
    assert results[0].status == "written" and (out / "case7.nii.gz").is_file()
    (entry,) = json.loads((out / "index.json").read_text())
    assert entry == {
        "case_id": "case7",
        "image": str(scan.resolve()),
        "prediction": str((out / "case7.nii.gz").resolve()),
        "label": str(label.resolve()),
        "dataset": "phantom",
        "modality": "CT",  # the training data's (kits19), as predict took it; the report draws by it
        "models": [{"checkpoint": None, "sha256": None}],  # a model given in memory has no file to name
        "backend": "torch",  # what ran the network (predict --backend)
    }


@needs_data
def test_find_cases_expands_files_folders_and_dicom_series(tmp_path):
    assert [(c.case_id, c.image) for c in find_cases(DICOM)] == [("dicom_series", DICOM)]
    assert [(c.case_id, c.image) for c in find_cases(CT)] == [("ct", CT)]
    # DATA holds two NIfTI files and one series folder (its files have no .dcm suffix)
    assert [c.case_id for c in find_cases(DATA)] == ["ct", "organs_predicted", "dicom_series"]
    (tmp_path / "notes.txt").write_text("no scans here")
    with pytest.raises(DataError, match=re.escape(str(tmp_path))):
        find_cases(tmp_path)


@needs_data
def test_a_dicom_series_given_as_dot_or_dotdot_is_named_after_its_folder(tmp_path, monkeypatch):
    """issue 31, item 16: `.` and `series/sub/..` got the case id "" and "..", and predict wrote
    `o/.nii.gz`, which evaluate then ignored."""
    import shutil

    series = tmp_path / "series_7"
    shutil.copytree(DICOM, series)
    (series / "sub").mkdir()
    monkeypatch.chdir(series)
    assert [(c.case_id, c.image) for c in find_cases(".")] == [("series_7", Path("."))]
    assert [c.case_id for c in find_cases("sub/..")] == ["series_7"]
    assert [c.case_id for c in find_cases(tmp_path / "series_7" / "sub" / "..")] == ["series_7"]
    results = predict_cases((IntensityAndEdge(), tiny_config()), ["."], tmp_path / "out", progress=False)
    assert [(r.case_id, r.status) for r in results] == [("series_7", "written")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["index.json", "series_7.nii.gz"]


def test_training_modality_comes_from_the_training_datasets():
    def config(*datasets):
        return config_from_dict({"classes": ["liver"], "datasets": list(datasets)})

    assert training_modality(config({"name": "k", "format": "kits19", "path": "x"})) == "CT"
    assert training_modality(config({"name": "c", "format": "chaos_nifti", "path": "x"})) == "MR"
    assert training_modality(config({"name": "n", "format": "nnunet", "path": "x", "modality": "MR"})) == "MR"
    with pytest.raises(ConfigError, match="--modality"):
        training_modality(
            config({"name": "k", "format": "kits19", "path": "x"}, {"name": "c", "format": "chaos_nifti", "path": "x"})
        )


@needs_data
def test_prepare_image_normalises_and_resamples_like_training():
    from tctseg.inference.predict import prepare_image

    volume = load_volume(CT)
    # at the scan's own spacing (3 mm, RAS file) only the CT scaling acts: clip to [-1024, 1024] → [0, 1]
    image, geometry = prepare_image(volume, "CT", tiny_config(spacing=[3.0, 3.0, 3.0]))
    expected = np.clip((volume.array + 1024.0) / 2048.0, 0.0, 1.0)
    assert image.dtype == np.float32 and tuple(geometry.prepared_shape) == (122, 101, 112)
    np.testing.assert_allclose(image, expected, atol=1e-6)
    # at 8 mm: n_out = round(n · 3 / 8) voxels per axis
    image8, geometry8 = prepare_image(volume, "CT", tiny_config())
    assert image8.shape == tuple(geometry8.prepared_shape) == (46, 38, 42)


def test_predict_device_is_cuda_when_present_unless_cpu_is_asked(monkeypatch):
    from tctseg.devices import resolve_device
    from tctseg.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="--device cuda: no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == "cuda" and resolve_device("cpu") == "cpu" and resolve_device("cuda") == "cuda"


def test_scans_predict_cannot_read_are_each_named_once_and_the_rest_predicted(tmp_path, capsys):
    """A .mha or .nrrd scan beside .nii.gz files was skipped without a word (issue 31, item 15)."""
    import hashlib

    import SimpleITK as sitk

    config = tiny_config(spacing=[4.0, 4.0, 8.0])
    checkpoint = save_checkpoint_of(build_method(config), config, tmp_path / "model.pt")
    scans = tmp_path / "scans"
    scans.mkdir()
    write_volume(scans / "a_0000.nii.gz")
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
    sitk.WriteImage(image, str(scans / "b.mha"))
    sitk.WriteImage(image, str(scans / "c.nrrd"))
    (scans / "a_0000.json").write_text("{}")  # a BIDS sidecar: no scan, named with the other non-scans
    (scans / "notes.txt").write_text("mine")
    (scans / "slice_1.dcm").write_bytes(b"\0" * 128 + b"DICM")  # a DICOM file beside NIfTI files
    (scans / "more").mkdir()  # not a DICOM series: predict does not look inside
    write_volume(scans / "more" / "d.nii.gz")
    (scans / ".hidden.mha").write_bytes(b"")  # hidden: passed over, as find_cases passes it over
    write_volume(scans / "E.NII.GZ")  # find_cases reads lower-case suffixes only
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in scans.rglob("*") if p.is_file()}
    out = scans / "predictions"  # the output folder inside INPUT is not named
    for attempt in range(2):
        assert main(["predict", str(checkpoint), str(scans), str(out), "--no-progress"]) == 0
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        warned = captured.err.strip().splitlines()
        reads = "predict reads NIfTI files (.nii, .nii.gz) and DICOM series folders"
        assert warned == [
            f"tctseg predict: warning: {scans / 'E.NII.GZ'}: skipped: a NIfTI file whose suffix is not .nii or .nii.gz "
            f"in lower case: {reads}; rename it",
            f"tctseg predict: warning: {scans / 'b.mha'}: skipped: a scan in MetaImage format (.mha): {reads}; convert it to "
            ".nii.gz first (SimpleITK reads it: sitk.WriteImage(sitk.ReadImage(path), 'case.nii.gz'))",
            f"tctseg predict: warning: {scans / 'c.nrrd'}: skipped: a scan in NRRD format (.nrrd): {reads}; convert it to "
            ".nii.gz first (SimpleITK reads it: sitk.WriteImage(sitk.ReadImage(path), 'case.nii.gz'))",
            f"tctseg predict: warning: {scans / 'more'}: skipped: a folder that is not a DICOM series; predict does not "
            "look inside sub-folders (give this folder as INPUT to predict its scans)",
            f"tctseg predict: warning: {scans / 'slice_1.dcm'}: skipped: DICOM files beside NIfTI files: predict reads a "
            "DICOM series from a folder of its own (move each series into one)",
            f"tctseg predict: warning: {scans}/{{a_0000.json, notes.txt}}: skipped: not scans: {reads}",
        ], captured.err
        assert ("1 written" if attempt == 0 else "1 skipped (output existed)") in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "index.json"]
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in scans.rglob("*")
            if p.is_file() and out not in p.parents} == before

    from tctseg.inference.unread import unread_entries

    # many files of one kind are one line naming the first three
    for i in range(5):
        (scans / f"s{i}.dcm").write_bytes(b"")
    assert (f"{scans}/{{s0.dcm, s1.dcm, s2.dcm and 3 more}}", "DICOM files beside NIfTI files: predict reads a DICOM "
            "series from a folder of its own (move each series into one)") in unread_entries(scans)
    # a single scan file, a DICOM series folder, or a folder of NIfTI files only: nothing to say
    assert unread_entries(scans / "a_0000.nii.gz") == [] and unread_entries(scans / "more") == []
