"""The phantom: layouts, label ids, anatomical sides in world space, intensities, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tctseg.cli import main
from tctseg.data.phantom import LIVER, SPLEEN, render_case, write_phantom
from tctseg.errors import ConfigError, OutputError

TINY = {"kits19": 3, "Task03_Liver": 2, "Task07_Pancreas": 3, "Task09_Spleen": 2, "btcv": 2}


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    assert write_phantom(out, size="tiny", seed=0) == TINY
    return out


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


def _world_centroid_x(mask: np.ndarray, affine: np.ndarray) -> float:
    """World x (RAS+ mm; +x is the patient's Right, nibabel's convention) of a mask's centroid."""
    voxel = np.argwhere(mask).mean(axis=0)
    return float((affine @ np.append(voxel, 1.0))[0])


def _file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layouts_follow_the_public_datasets(phantom_dir: Path) -> None:
    kits = sorted(p.name for p in (phantom_dir / "kits19").iterdir())
    assert kits == ["case_00000", "case_00001", "case_00002"]
    for case in kits:
        assert sorted(p.name for p in (phantom_dir / "kits19" / case).iterdir()) == ["imaging.nii.gz", "segmentation.nii.gz"]
    for task, stem, labels in [
        ("Task03_Liver", "liver_", {"0": "background", "1": "liver", "2": "cancer"}),
        ("Task07_Pancreas", "pancreas_", {"0": "background", "1": "pancreas", "2": "cancer"}),
        ("Task09_Spleen", "spleen_", {"0": "background", "1": "spleen"}),
    ]:
        meta = json.loads((phantom_dir / task / "dataset.json").read_text())
        assert {"name", "description", "modality", "labels", "numTraining", "numTest", "training", "test"} <= set(meta)
        assert meta["modality"] == {"0": "CT"} and meta["labels"] == labels
        assert meta["numTraining"] == TINY[task] == len(meta["training"]) and meta["numTest"] == 0 and meta["test"] == []
        for entry in meta["training"]:
            assert entry["image"].startswith(f"./imagesTr/{stem}") and entry["label"].startswith(f"./labelsTr/{stem}")
            assert Path(entry["image"]).name == Path(entry["label"]).name
            assert (phantom_dir / task / entry["image"]).is_file() and (phantom_dir / task / entry["label"]).is_file()
    assert (phantom_dir / "Task07_Pancreas" / "imagesTr" / "pancreas_001.nii.gz").is_file()  # MSD's zero padding
    btcv = phantom_dir / "btcv" / "RawData" / "Training"
    assert sorted(p.name for p in (btcv / "img").iterdir()) == ["img0001.nii.gz", "img0002.nii.gz"]
    assert sorted(p.name for p in (btcv / "label").iterdir()) == ["label0001.nii.gz", "label0002.nii.gz"]
    assert (phantom_dir / "README.md").is_file()
    # no staging left; the marker lists every file written (what a later --overwrite may replace)
    assert [p.name for p in phantom_dir.iterdir() if p.name.startswith(".")] == [".tctseg-phantom.json"]
    record = json.loads((phantom_dir / ".tctseg-phantom.json").read_text())
    assert record["size"] == "tiny" and record["seed"] == 0
    assert record["files"] == sorted(p for p in _file_hashes(phantom_dir) if not p.startswith("."))


def test_label_ids_are_each_datasets_own(phantom_dir: Path) -> None:
    for case in sorted((phantom_dir / "kits19").iterdir()):
        label, _ = _load(case / "segmentation.nii.gz")
        assert set(np.unique(label)) == {0, 1, 2}  # kidney + a tumour in every case, like KiTS19
    for task, allowed in [("Task03_Liver", {0, 1, 2}), ("Task07_Pancreas", {0, 1, 2}), ("Task09_Spleen", {0, 1})]:
        for path in sorted((phantom_dir / task / "labelsTr").iterdir()):
            values = set(np.unique(_load(path)[0]).tolist())
            assert values <= allowed and {0, 1} <= values
    for path in sorted((phantom_dir / "btcv" / "RawData" / "Training" / "label").iterdir()):
        values = set(np.unique(_load(path)[0]).tolist())
        assert {0, 1, 2, 3, 6, 11} <= values <= {0, 1, 2, 3, 6, 8, 9, 11}


def test_geometry_mimics_kits19_and_mixes_orientations(phantom_dir: Path) -> None:
    for case in sorted((phantom_dir / "kits19").iterdir()):
        image, label = nib.load(str(case / "imaging.nii.gz")), nib.load(str(case / "segmentation.nii.gz"))
        assert nib.aff2axcodes(image.affine) == ("I", "P", "L")  # as the real KiTS19 files
        assert np.allclose(image.affine, label.affine) and image.shape == label.shape
        assert np.allclose(image.affine[:3, 3], 0.0)
        assert image.shape[0] < image.shape[1]  # slice axis first
    codes = set()
    for task in ("Task03_Liver", "Task07_Pancreas", "Task09_Spleen"):
        for path in (phantom_dir / task / "imagesTr").iterdir():
            affine = nib.load(str(path)).affine
            codes.add(nib.aff2axcodes(affine))
            spacing = np.linalg.norm(affine[:3, :3], axis=0)
            assert spacing[0] == pytest.approx(spacing[1])
            assert 0.7 <= spacing[0] <= 1.6 and 1.5 <= spacing[2] <= 5.0
    assert {("R", "A", "S"), ("L", "P", "S")} <= codes


def test_organs_are_on_the_correct_side_in_world_coordinates(phantom_dir: Path) -> None:
    btcv = phantom_dir / "btcv" / "RawData" / "Training"
    seen_codes = set()
    for number in ("0001", "0002"):
        image, affine = _load(btcv / "img" / f"img{number}.nii.gz")
        label, label_affine = _load(btcv / "label" / f"label{number}.nii.gz")
        assert np.allclose(affine, label_affine)
        seen_codes.add(nib.aff2axcodes(affine))
        midline = _world_centroid_x(image > -500, affine)  # the body is centred on the spine
        # BTCV ids: 1 spleen, 2 right kidney, 3 left kidney, 6 liver
        assert _world_centroid_x(label == 6, affine) > midline + 10
        assert _world_centroid_x(label == 2, affine) > midline + 10
        assert _world_centroid_x(label == 1, affine) < midline - 10
        assert _world_centroid_x(label == 3, affine) < midline - 10
    assert seen_codes == {("R", "A", "S"), ("L", "P", "S")}
    for task, sign in (("Task03_Liver", 1), ("Task09_Spleen", -1)):
        task_codes = set()
        for path in sorted((phantom_dir / task / "imagesTr").iterdir()):
            image, affine = _load(path)
            label, _ = _load(phantom_dir / task / "labelsTr" / path.name)
            task_codes.add(nib.aff2axcodes(affine))
            offset = _world_centroid_x(label > 0, affine) - _world_centroid_x(image > -500, affine)
            assert sign * offset > 10
        assert len(task_codes) == 2  # checked in both voxel orders


def test_liver_and_spleen_have_similar_intensity_kidneys_are_brighter(phantom_dir: Path) -> None:
    for number in ("0001", "0002"):
        image, _ = _load(phantom_dir / "btcv" / "RawData" / "Training" / "img" / f"img{number}.nii.gz")
        label, _ = _load(phantom_dir / "btcv" / "RawData" / "Training" / "label" / f"label{number}.nii.gz")
        liver, spleen = image[label == 6].mean(), image[label == 1].mean()
        kidney, pancreas = image[(label == 2) | (label == 3)].mean(), image[label == 11].mean()
        assert 40 < liver < 80 and abs(liver - spleen) < 20
        assert kidney > liver + 50
        assert 20 < pancreas < 60
        assert image[label == 0].min() <= -990  # air around the body


def test_same_seed_same_bytes_and_overwrite_rules(phantom_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    stray = out / "kits19" / "case_00099" / "imaging.nii.gz"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"old")
    with pytest.raises(OutputError, match="not empty"):
        write_phantom(out, size="tiny", seed=0)
    assert main(["phantom", str(out), "--size", "tiny"]) == 2  # the CLI reports it, no traceback
    # no phantom marker: not a folder tctseg wrote, so --overwrite does not touch it either
    with pytest.raises(OutputError, match=r"holds no phantom tctseg wrote \(no \.tctseg-phantom\.json\)"):
        write_phantom(out, size="tiny", seed=0, overwrite=True)
    assert stray.read_bytes() == b"old"  # nothing touched
    stray.unlink()
    stray.parent.rmdir()
    (out / "kits19").rmdir()
    assert main(["phantom", str(out), "--size", "tiny", "--seed", "0"]) == 0
    # a stale case an older phantom wrote (its marker lists it) is replaced ...
    stray.parent.mkdir()
    stray.write_bytes(b"old")
    marker = out / ".tctseg-phantom.json"
    record = json.loads(marker.read_text())
    marker.write_text(json.dumps({**record, "files": record["files"] + ["kits19/case_00099/imaging.nii.gz"]}))
    with pytest.raises(OutputError, match="holds a phantom already; pass --overwrite"):
        write_phantom(out, size="tiny", seed=0)
    assert main(["phantom", str(out), "--size", "tiny", "--seed", "0", "--overwrite"]) == 0
    assert not stray.parent.exists()  # a stale case of an older phantom is gone
    assert _file_hashes(out) == _file_hashes(phantom_dir)
    # ... but a file the phantom did not write stops --overwrite
    mine = out / "Task03_Liver" / "imagesTr" / "mine.nii.gz"
    mine.write_bytes(b"mine")
    with pytest.raises(OutputError, match="Task03_Liver/imagesTr/mine.nii.gz is not a file the phantom there wrote"):
        write_phantom(out, size="tiny", seed=0, overwrite=True)
    assert mine.read_bytes() == b"mine"


def test_different_seeds_differ_and_bad_size_is_refused(tmp_path: Path) -> None:
    first = render_case(np.random.default_rng(np.random.SeedSequence([0, 0, 0])), 200_000)
    again = render_case(np.random.default_rng(np.random.SeedSequence([0, 0, 0])), 200_000)
    other = render_case(np.random.default_rng(np.random.SeedSequence([1, 0, 0])), 200_000)
    assert np.array_equal(first.hu, again.hu) and np.array_equal(first.organs, again.organs)
    assert first.hu.shape != other.hu.shape or not np.array_equal(first.hu, other.hu)
    assert (first.organs == LIVER).sum() > (first.organs == SPLEEN).sum() > 0
    with pytest.raises(ConfigError, match="size"):
        write_phantom(tmp_path / "x", size="huge")


def test_kits19_voxel_order_round_trips_to_the_rendered_world(tmp_path: Path) -> None:
    from tctseg.data.phantom import _write_pair

    case = render_case(np.random.default_rng(5), 200_000)
    label = case.organs.copy()
    _write_pair(case, label, ("I", "P", "L"), tmp_path / "imaging.nii.gz", tmp_path / "segmentation.nii.gz", zero_origin=True)
    stored = nib.load(str(tmp_path / "segmentation.nii.gz"))
    assert stored.shape == (case.hu.shape[2], case.hu.shape[1], case.hu.shape[0])
    canonical = nib.as_closest_canonical(stored)
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    assert np.array_equal(np.asarray(canonical.dataobj), label)  # same voxels, only the storage order differs
    image = nib.as_closest_canonical(nib.load(str(tmp_path / "imaging.nii.gz")))
    assert np.array_equal(np.asarray(image.dataobj), case.hu)
