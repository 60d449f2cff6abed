"""The prepared cache: prepare(), reruns, fingerprints, stale partial folders, bad inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tctseg.cli import main
from tctseg.config import config_from_dict
from tctseg.errors import DataError
from tctseg.preprocessing.cache import cache_root, fingerprint, load_prepared, prepare

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLASSES = ["liver", "spleen", "left_kidney", "right_kidney", "pancreas"]


def write(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def make_liver_task(root: Path, n: int = 2) -> Path:
    """A tiny MSD Task03-like dataset, stored LPS, with a liver block and a tumour inside it."""
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(
        json.dumps({"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"}})
    )
    affine = np.diag([-1.5, -1.5, 4.0, 1.0])
    for i in range(n):
        image = np.full((16, 12, 6), -1000, np.int16)
        label = np.zeros((16, 12, 6), np.uint8)
        image[2:10, 3:9, 1:5], label[2:10, 3:9, 1:5] = 60, 1
        label[4:6, 4:6, 2:3] = 2
        write(root / "imagesTr" / f"liver_{i}.nii.gz", image, affine)
        write(root / "labelsTr" / f"liver_{i}.nii.gz", label, affine)
    return root


def make_config(tmp_path: Path, datasets: list[dict], **pre) -> object:
    raw = {"classes": CLASSES, "datasets": datasets, "cache_dir": str(tmp_path / "cache")}
    if pre:
        raw["preprocessing"] = pre
    return config_from_dict(raw)


def test_prepare_writes_the_documented_case_folder(tmp_path):
    root = make_liver_task(tmp_path / "Task03_Liver")
    config = make_config(tmp_path, [{"name": "lits", "format": "msd", "path": str(root)}], spacing=[3.0, 3.0, 4.0])
    cases = prepare(config, workers=1, progress=False)
    assert [c.case_id for c in cases] == ["liver_0", "liver_1"]
    case = cases[0]
    assert case.folder == cache_root(config) / "lits" / "liver_0"
    assert case.annotated == (1,) and case.modality == "CT"
    image, label = case.image, case.label
    assert image.dtype == np.float32 and label.dtype == np.uint8 and image.shape == label.shape == (8, 6, 6)
    assert isinstance(image, np.memmap)
    # CT scaling: -1000 HU -> (−1000 + 1024) / 2048, 60 HU -> 1084 / 2048
    assert np.isclose(image.min(), 24 / 2048) and np.isclose(image.max(), 1084 / 2048)
    assert set(np.unique(label)) == {0, 1}  # tumour merged into liver
    meta = case.meta
    for key in ("case_id", "dataset", "modality", "source_files", "label_map", "annotated", "original",
                "prepared", "class_locations", "settings", "tctseg_version"):
        assert key in meta
    assert meta["original"]["orientation"] == ["L", "P", "S"] and meta["original"]["shape"] == [16, 12, 6]
    assert meta["prepared"]["spacing"] == [3.0, 3.0, 4.0]
    assert {Path(f["path"]).name for f in meta["source_files"]} == {"liver_0.nii.gz"}
    locations = np.array(meta["class_locations"]["1"])
    assert len(locations) == int((label == 1).sum()) and (label[tuple(locations.T)] == 1).all()
    assert load_prepared(config, "train")[1].case_id == "liver_1"


def test_rerun_is_a_no_op_and_changes_redo_only_what_changed(tmp_path):
    root = make_liver_task(tmp_path / "Task03_Liver")
    config = make_config(tmp_path, [{"name": "lits", "format": "msd", "path": str(root)}], spacing=[3.0, 3.0, 4.0])
    prepare(config, workers=1, progress=False)
    folder = cache_root(config) / "lits"
    stamps = {p.name: (p / "image.npy").stat().st_mtime_ns for p in folder.iterdir()}
    prepare(config, workers=1, progress=False)
    assert {p.name: (p / "image.npy").stat().st_mtime_ns for p in folder.iterdir()} == stamps
    # a changed source file redoes that case only
    label_path = root / "labelsTr" / "liver_1.nii.gz"
    label = np.asanyarray(nib.load(str(label_path)).dataobj).copy()
    label[:] = 0
    write(label_path, label, nib.load(str(label_path)).affine)
    os.utime(label_path, ns=(1, 1))
    prepare(config, workers=1, progress=False)
    assert (folder / "liver_0" / "image.npy").stat().st_mtime_ns == stamps["liver_0"]
    assert np.load(folder / "liver_1" / "label.npy").max() == 0
    # a changed label map (classes restricted) redoes the case
    restricted = make_config(tmp_path, [{"name": "lits", "format": "msd", "path": str(root), "classes": ["pancreas"]}],
                             spacing=[3.0, 3.0, 4.0])
    (case, _) = prepare(restricted, workers=1, progress=False)
    assert case.annotated == () and case.label.max() == 0


def test_changed_setting_prepares_into_a_new_fingerprint(tmp_path):
    root = make_liver_task(tmp_path / "Task03_Liver", n=1)
    first = make_config(tmp_path, [{"name": "lits", "format": "msd", "path": str(root)}], spacing=[3.0, 3.0, 4.0])
    second = make_config(tmp_path, [{"name": "lits", "format": "msd", "path": str(root)}], spacing=[1.5, 1.5, 4.0])
    assert fingerprint(first.preprocessing) != fingerprint(second.preprocessing)
    a = prepare(first, workers=1, progress=False)[0]
    b = prepare(second, workers=1, progress=False)[0]
    assert a.image.shape == (8, 6, 6) and b.image.shape == (16, 12, 6)
    assert (cache_root(first) / "lits" / "liver_0" / "meta.json").exists()  # the old one is kept


def test_stale_partial_folder_is_removed_and_the_case_redone(tmp_path):
    root = make_liver_task(tmp_path / "Task03_Liver", n=1)
    config = make_config(tmp_path, [{"name": "lits", "format": "msd", "path": str(root)}], spacing=[3.0, 3.0, 4.0])
    stale = cache_root(config) / "lits" / "liver_0.partial-123"
    stale.mkdir(parents=True)
    (stale / "image.npy").write_bytes(b"half written")
    with pytest.raises(DataError, match="no prepared cases of .lits.; run `tctseg prepare"):
        load_prepared(config, "train")  # a partial folder is never read
    (case,) = prepare(config, workers=1, progress=False)
    assert not stale.exists() and case.image.shape == (8, 6, 6)


def test_bad_cases_are_all_reported_and_good_ones_kept(tmp_path):
    root = make_liver_task(tmp_path / "Task03_Liver", n=3)
    (root / "imagesTr" / "liver_1.nii.gz").write_bytes(b"\x1f\x8b truncated")
    label = np.zeros((16, 12, 6), np.uint8)
    label[0, 0, 0] = 7
    write(root / "labelsTr" / "liver_2.nii.gz", label, np.diag([-1.5, -1.5, 4.0, 1.0]))
    config = make_config(tmp_path, [{"name": "lits", "format": "msd", "path": str(root)}], spacing=[3.0, 3.0, 4.0])
    with pytest.raises(DataError) as error:
        prepare(config, workers=2, progress=False)
    message = str(error.value)
    assert "2 of 3 cases could not be prepared" in message
    assert "imagesTr/liver_1.nii.gz: cannot read NIfTI file" in message
    assert "labelsTr/liver_2.nii.gz holds label 7, but dataset.json defines only 0, 1, 2" in message
    assert (cache_root(config) / "lits" / "liver_0" / "meta.json").exists()
    assert not list((cache_root(config) / "lits").glob("*.partial-*"))


def test_load_prepared_without_prepare_hints_at_the_command(tmp_path):
    config = make_config(tmp_path, [{"name": "lits", "format": "msd", "path": str(tmp_path)}])
    with pytest.raises(DataError, match="run `tctseg prepare CONFIG --datasets lits` first"):
        load_prepared(config, "train")


def test_real_chaos_cases_through_the_command_line(tmp_path, capsys):
    root = DATA / "chaos-t2"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        f"classes: {CLASSES}\ncache_dir: {tmp_path / 'cache'}\n"
        f"datasets:\n  - {{name: chaos, format: chaos_nifti, path: {root}, cases: [chaos_01, chaos_02]}}\n"
    )
    assert main(["prepare", str(config_path), "--workers", "2", "--quiet"]) == 0
    assert "2 cases prepared" in capsys.readouterr().out
    config = make_config(tmp_path, [{"name": "chaos", "format": "chaos_nifti", "path": str(root), "cases": ["chaos_01", "chaos_02"]}])
    case = load_prepared(config, "train")[0]
    assert case.modality == "MR" and case.annotated == (1, 2, 3, 4)
    assert case.meta["original"]["shape"] == [256, 256, 37]
    assert 0.0 <= float(case.image.min()) and float(case.image.max()) <= 1.0
    spacing = case.meta["prepared"]["spacing"]
    assert np.allclose(spacing[:2], 1.0) and abs(spacing[2] - 3.0) < 0.05
    assert set(np.unique(case.label)) == {0, 1, 2, 3, 4}
    assert main(["prepare", str(config_path), "--datasets", "nope", "--quiet"]) == 2


def test_a_constant_scan_is_a_per_case_error_naming_it_and_the_others_are_prepared(tmp_path):
    """issue 31, item 12: a scan that intensity scaling turns into one value is never trained on in silence."""
    root = make_liver_task(tmp_path / "Task03_Liver", n=3)
    write(root / "imagesTr" / "liver_1.nii.gz", np.full((16, 12, 6), -1000, np.int16), np.diag([-1.5, -1.5, 4.0, 1.0]))
    config = make_config(tmp_path, [{"name": "lits", "format": "msd", "path": str(root)}], spacing=[3.0, 3.0, 4.0])
    with pytest.raises(DataError) as error:
        prepare(config, workers=1, progress=False)
    message = str(error.value)
    assert "1 of 3 cases could not be prepared" in message
    failed = [line.strip() for line in message.splitlines()[1:]]
    assert failed == [
        f"lits/liver_1: {root / 'imagesTr' / 'liver_1.nii.gz'}: the prepared image is constant (every voxel 0.0117188 "
        "after intensity scaling: CT, preprocessing.ct_clip [-1024.0, 1024.0], the scan's values -1000 to -1000): "
        "nothing in it to learn from or to segment — check the setting or the scan (a training case can be left out "
        "with exclude_cases)"
    ]
    assert sorted(p.name for p in (cache_root(config) / "lits").iterdir()) == ["liver_0", "liver_2"]


@pytest.mark.parametrize("ct_clip, what", [((5.0, 5.0), "1152 of 1152 voxels are NaN or infinite after intensity scaling"),
                                           ((1024.0, -1024.0), "the prepared image is constant (every voxel 1 ")])
def test_prepare_case_refuses_a_clip_the_config_would_refuse_before_writing_anything(tmp_path, ct_clip, what):
    """Past the config's own check (a PreprocessingConfig built directly): [5, 5] made every
    voxel NaN with only a numpy warning, [1024, -1024] made every voxel 1.0; both exit 0."""
    from tctseg.config import PreprocessingConfig
    from tctseg.data.conversion import find_cases
    from tctseg.preprocessing.cache import prepare_case, settings_of

    root = make_liver_task(tmp_path / "Task03_Liver", n=1)
    config = make_config(tmp_path, [{"name": "lits", "format": "msd", "path": str(root)}])
    (case,) = find_cases(config.datasets[0], CLASSES)
    settings = settings_of(PreprocessingConfig(spacing=(3.0, 3.0, 4.0), ct_clip=ct_clip))
    with np.errstate(invalid="ignore", divide="ignore"):
        with pytest.raises(DataError) as error:
            prepare_case(case, tmp_path / "cache" / "liver_0", settings, CLASSES)
    assert str(error.value).startswith(f"{root / 'imagesTr' / 'liver_0.nii.gz'}: {what}"), str(error.value)
    assert f"preprocessing.ct_clip {list(ct_clip)}" in str(error.value)
    assert not (tmp_path / "cache").exists()


def test_a_flat_mr_scan_is_refused_as_constant():
    from tctseg.preprocessing.scan import check_normalised
    from tctseg.preprocessing.intensity import normalise_mr

    flat = np.full((4, 4, 4), 7.0, np.float32)
    settings = {"ct_clip": [-1024.0, 1024.0], "mr_percentiles": [0.5, 99.5]}
    with pytest.raises(DataError, match=r"^scan.nii.gz: the prepared image is constant \(every voxel 0 after intensity "
                                        r"scaling: MR, preprocessing.mr_percentiles \[0.5, 99.5\], the scan's values 7 to 7\)"):
        check_normalised(normalise_mr(flat, (0.5, 99.5)), flat, "MR", settings, Path("scan.nii.gz"))
    varied = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    check_normalised(normalise_mr(varied, (0.5, 99.5)), varied, "MR", settings, Path("scan.nii.gz"))
