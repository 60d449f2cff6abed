"""Converters: dataset layouts in, SourceCases with labels in global ids out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tctseg.config import DatasetConfig
from tctseg.data.conversion import CONVERTERS, dataset_modality, find_cases
from tctseg.data.conversion.kits19 import right_side_mask
from tctseg.errors import DataError, LabelError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLASSES = ["liver", "spleen", "left_kidney", "right_kidney", "pancreas"]
AFFINE = np.diag([2.0, 2.0, 4.0, 1.0])


def write(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def make_msd(root: Path, labels: dict, cases: dict[str, np.ndarray]) -> Path:
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"name": "Liver", "modality": {"0": "CT"}, "labels": labels}))
    for name, label in cases.items():
        write(root / "imagesTr" / f"{name}.nii.gz", np.zeros(label.shape, np.int16))
        write(root / "labelsTr" / f"{name}.nii.gz", label.astype(np.uint8))
    return root


def flip(array: np.ndarray, affine: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Flip voxel axes and adjust the affine so every voxel keeps its world position."""
    out, new = array, affine.copy()
    for ax in axes:
        out = np.flip(out, axis=ax)
        new[:, 3] = new[:, 3] + new[:, ax] * (array.shape[ax] - 1)
        new[:, ax] = -new[:, ax]
    return np.ascontiguousarray(out), new


# --------------------------------------------------------------------------- MSD and the generic door


def test_msd_liver_tumour_merges_into_liver_and_ignores_macos_files(tmp_path):
    label = np.zeros((4, 4, 3), np.uint8)
    label[0, 0, 0], label[1, 1, 1] = 1, 2
    root = make_msd(tmp_path / "Task03_Liver", {"0": "background", "1": "liver", "2": "cancer"}, {"liver_0": label})
    (root / "imagesTr" / "._liver_0.nii.gz").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    (cases,) = [find_cases(DatasetConfig("lits", "msd", str(root)), CLASSES)]
    assert [c.case_id for c in cases] == ["liver_0"]
    case = cases[0]
    assert case.modality == "CT" and case.annotated == ("liver",)
    image, mapped = case.load()
    assert image.shape == (4, 4, 3) and mapped.dtype == np.uint8
    assert mapped[0, 0, 0] == 1 and mapped[1, 1, 1] == 1 and mapped.sum() == 2


def test_msd_pancreas_maps_to_global_id_and_dataset_classes_restrict(tmp_path):
    label = np.zeros((4, 4, 3), np.uint8)
    label[0, 0, 0], label[1, 1, 1] = 1, 2
    root = make_msd(tmp_path / "Task07", {"0": "background", "1": "pancreas", "2": "cancer"}, {"pancreas_1": label})
    (case,) = find_cases(DatasetConfig("panc", "msd", str(root)), CLASSES)
    _, mapped = case.load()
    assert case.annotated == ("pancreas",) and set(np.unique(mapped)) == {0, 5}
    (case,) = find_cases(DatasetConfig("panc", "msd", str(root), classes=["liver"]), CLASSES)
    assert case.annotated == () and case.load()[1].max() == 0


def test_label_value_outside_dataset_json_is_a_label_error(tmp_path):
    label = np.zeros((4, 4, 3), np.uint8)
    label[2, 2, 2] = 3
    root = make_msd(tmp_path / "Task03", {"0": "background", "1": "liver", "2": "cancer"}, {"liver_7": label})
    (case,) = find_cases(DatasetConfig("lits", "msd", str(root)), CLASSES)
    with pytest.raises(LabelError, match=r"labelsTr/liver_7.nii.gz holds label 3, but dataset.json defines only 0, 1, 2"):
        case.load()


def test_missing_label_and_missing_image_are_clear_errors(tmp_path):
    label = np.zeros((4, 4, 3), np.uint8)
    root = make_msd(tmp_path / "Task09", {"0": "background", "1": "spleen"}, {"spleen_1": label, "spleen_2": label})
    (root / "labelsTr" / "spleen_1.nii.gz").unlink()
    (root / "imagesTr" / "spleen_2.nii.gz").unlink()
    first, second = find_cases(DatasetConfig("spleen", "msd", str(root)), CLASSES)
    with pytest.raises(DataError, match=r"labelsTr/spleen_1.nii.gz: label file not found"):
        first.load()
    with pytest.raises(DataError, match=r"imagesTr/spleen_2.nii.gz: file not found"):
        second.load()


def test_nnunet_door_uses_label_map_and_case_selection(tmp_path):
    root = tmp_path / "Dataset123_Private"
    root.mkdir()
    info = {"channel_names": {"0": "T2"}, "labels": {"background": 0, "organ_a": 1, "organ_b": 2}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(info))
    for name in ("p1", "p2", "p3"):
        label = np.zeros((3, 3, 3), np.uint8)
        label[0, 0, 0], label[1, 1, 1] = 1, 2
        write(root / "imagesTr" / f"{name}_0000.nii.gz", np.ones((3, 3, 3), np.float32))
        write(root / "labelsTr" / f"{name}.nii.gz", label)
    dataset = DatasetConfig("mine", "nnunet", str(root), label_map={1: "spleen", 2: "background"}, cases=["p3", "p1"])
    cases = find_cases(dataset, CLASSES)
    assert [c.case_id for c in cases] == ["p3", "p1"]
    assert cases[0].modality == "MR" and cases[0].annotated == ("spleen",)
    _, mapped = cases[0].load()
    assert mapped[0, 0, 0] == 2 and mapped[1, 1, 1] == 0
    excluded = DatasetConfig("mine", "nnunet", str(root), label_map={1: "spleen"}, exclude_cases=["p2"])
    assert [c.case_id for c in find_cases(excluded, CLASSES)] == ["p1", "p3"]
    with pytest.raises(DataError, match="has no case 'p9'"):
        find_cases(DatasetConfig("mine", "nnunet", str(root), cases=["p9"]), CLASSES)


def test_dataset_modality_is_the_modality_the_converter_gives_the_cases(tmp_path):
    label = np.zeros((3, 3, 3), np.uint8)
    label[0, 0, 0] = 1
    prostate = make_msd(tmp_path / "Task05_Prostate", {"0": "background", "1": "liver"}, {"p_0": label})
    (prostate / "dataset.json").write_text(json.dumps({"modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "liver"}}))
    liver = make_msd(tmp_path / "Task03_Liver", {"0": "background", "1": "liver"}, {"l_0": label})
    for root in (prostate, liver):
        for fmt in ("msd", "nnunet"):
            dataset = DatasetConfig("d", fmt, str(root))
            assert {c.modality for c in find_cases(dataset, CLASSES)} == {dataset_modality(dataset)}
    assert dataset_modality(DatasetConfig("d", "msd", str(prostate))) == "MR"
    # where a trained model is used the dataset folder may be gone: the format's default, or None
    gone = str(tmp_path / "gone")
    assert dataset_modality(DatasetConfig("d", "msd", gone)) == "CT"
    assert dataset_modality(DatasetConfig("d", "chaos_nifti", gone)) == "MR"
    assert dataset_modality(DatasetConfig("d", "nnunet", gone)) is None
    assert dataset_modality(DatasetConfig("d", "nnunet", gone, modality="MR")) == "MR"
    assert dataset_modality(DatasetConfig("d", "amos", gone, modality="MR")) == "MR"
    for fmt in CONVERTERS:  # every format has a rule (None only where dataset.json must tell)
        assert dataset_modality(DatasetConfig("d", fmt, gone)) in ({"CT", "MR"} if fmt != "nnunet" else {None})


def test_missing_dataset_json_is_a_clear_error(tmp_path):
    (tmp_path / "ds").mkdir()
    with pytest.raises(DataError, match=r"ds/dataset.json: not found"):
        find_cases(DatasetConfig("x", "nnunet", str(tmp_path / "ds")), CLASSES)


# --------------------------------------------------------------------------- CHAOS


def test_chaos_nifti_real_data_maps_kidneys_by_side():
    root = DATA / "chaos-t2"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    cases = find_cases(DatasetConfig("chaos", "chaos_nifti", str(root), cases=["chaos_01"]), CLASSES)
    (case,) = cases
    assert case.modality == "MR" and case.annotated == ("liver", "spleen", "left_kidney", "right_kidney")
    image, mapped = case.load()
    raw = np.asanyarray(nib.load(str(case.label)).dataobj)
    # dataset.json: 1 liver, 2 right kidney, 3 left kidney, 4 spleen -> global 1, 4, 3, 2
    for source, target in ((1, 1), (2, 4), (3, 3), (4, 2)):
        assert np.array_equal(mapped == target, raw == source)
    # anatomy as an independent check: the right kidney lies at larger RAS x than the left one
    def mean_x(mask):
        return (image.affine @ np.r_[np.argwhere(mask).mean(axis=0), 1.0])[0]
    assert mean_x(mapped == 4) > mean_x(mapped == 3)
    assert mean_x(mapped == 1) > mean_x(mapped == 2)  # liver (patient's right) vs spleen (left)


def test_chaos_partition_keeps_only_its_organ():
    root = DATA / "chaos-t2"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    (case,) = find_cases(DatasetConfig("chaos_liver", "chaos_nifti", str(root), cases=["chaos_02"], classes=["liver"]), CLASSES)
    assert case.annotated == ("liver",)
    assert set(np.unique(case.load()[1])) == {0, 1}


def write_dicom_series(folder: Path, volume: np.ndarray, spacing=(1.5, 1.5, 4.0)) -> None:
    """A tiny DICOM series with SimpleITK; slice files are NAMED in reverse z order on purpose."""
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    n = volume.shape[2]
    for k in range(n):
        plane = sitk.GetImageFromArray(volume[:, :, k].T.astype(np.int16)[None])  # [1, rows, cols]
        plane.SetSpacing(spacing)
        plane.SetOrigin((10.0, 20.0, 30.0 + spacing[2] * k))
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for tag, value in (
            ("0008|0060", "MR"),
            ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"),
            ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.2"),
            ("0020|0032", f"10\\20\\{30.0 + spacing[2] * k}"),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0020|0013", str(k + 1)),
            ("0028|0030", f"{spacing[1]}\\{spacing[0]}"),
            ("0018|0050", str(spacing[2])),
        ):
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IMG-0002-{n - k:05d}.dcm"))
        writer.Execute(plane)


def test_chaos_dicom_stacks_png_ground_truth_in_series_order(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.choice([0, 63, 126, 189, 252], size=(6, 5, 4)).astype(np.uint8)  # [cols, rows, slices]
    subject = tmp_path / "CHAOS" / "MR" / "5"
    # the image encodes the truth, so we can check the stacking against the series geometry
    write_dicom_series(subject / "T2SPIR" / "DICOM_anon", grey.astype(np.int16) + 1000)
    ground = subject / "T2SPIR" / "Ground"
    ground.mkdir()
    n = grey.shape[2]
    for k in range(n):
        # PNG i pairs with the i-th DICOM file by name; file IMG-0002-{n-k} holds slice k
        Image.fromarray(grey[:, :, k].T).save(ground / f"liver_GT_{n - k - 1:03d}.png")
    (case,) = find_cases(DatasetConfig("chaos_mr", "chaos_dicom", str(tmp_path / "CHAOS")), CLASSES)
    assert case.case_id == "5_T2SPIR" and case.modality == "MR"
    image, mapped = case.load()
    expected_from_image = {1063: 1, 1126: 4, 1189: 3, 1252: 2, 1000: 0}  # liver, right k., left k., spleen
    assert image.shape == (6, 5, 4)
    expected = np.vectorize(expected_from_image.get)(image.array.astype(int))
    np.testing.assert_array_equal(mapped, expected)
    # geometry: LPS origin (10, 20, 30) is RAS (-10, -20, 30); slices go superior
    np.testing.assert_allclose(image.affine @ [0, 0, 1, 1], [-10, -20, 34, 1], atol=1e-4)


def test_chaos_dicom_unknown_grey_level_is_a_label_error(tmp_path):
    from PIL import Image

    subject = tmp_path / "MR" / "1"
    write_dicom_series(subject / "T2SPIR" / "DICOM_anon", np.zeros((4, 4, 2)))
    (subject / "T2SPIR" / "Ground").mkdir()
    for k in range(2):
        Image.fromarray(np.full((4, 4), 90 if k else 0, np.uint8)).save(subject / "T2SPIR" / "Ground" / f"g{k}.png")
    (case,) = find_cases(DatasetConfig("chaos_mr", "chaos_dicom", str(tmp_path)), CLASSES)
    with pytest.raises(LabelError, match="g1.png holds grey level 90"):
        case.load()


# --------------------------------------------------------------------------- BTCV, WORD, AMOS: kidney ids differ


@pytest.mark.parametrize(
    "fmt, layout, right_id, left_id",
    [
        ("btcv", ("RawData/Training/img/img0001.nii.gz", "RawData/Training/label/label0001.nii.gz"), 2, 3),
        ("word", ("imagesVal/word_0001.nii.gz", "labelsVal/word_0001.nii.gz"), 4, 3),
        ("amos", ("imagesTr/amos_0001.nii.gz", "labelsTr/amos_0001.nii.gz"), 2, 3),
    ],
)
def test_fully_labelled_test_sets_take_only_configured_classes(tmp_path, fmt, layout, right_id, left_id):
    label = np.zeros((4, 4, 4), np.uint8)
    label[0, 0, 0], label[1, 1, 1], label[2, 2, 2] = right_id, left_id, 7  # 7: stomach, not configured
    write(tmp_path / layout[0], np.zeros((4, 4, 4), np.int16))
    write(tmp_path / layout[1], label)
    (case,) = find_cases(DatasetConfig("t", fmt, str(tmp_path), role="test"), CLASSES)
    _, mapped = case.load()
    assert case.modality == "CT"
    assert (mapped[0, 0, 0], mapped[1, 1, 1], mapped[2, 2, 2]) == (4, 3, 0)


def test_amos_mri_cases_are_told_apart_by_id(tmp_path):
    for cid in ("amos_0005", "amos_0540"):
        write(tmp_path / "imagesTr" / f"{cid}.nii.gz", np.zeros((2, 2, 2), np.int16))
        write(tmp_path / "labelsTr" / f"{cid}.nii.gz", np.zeros((2, 2, 2), np.uint8))
    cases = find_cases(DatasetConfig("amos", "amos", str(tmp_path)), CLASSES)
    assert [(c.case_id, c.modality) for c in cases] == [("amos_0005", "CT"), ("amos_0540", "MR")]
    ct_only = find_cases(DatasetConfig("amos", "amos", str(tmp_path), modality="CT"), CLASSES)
    assert [c.case_id for c in ct_only] == ["amos_0005"]


# --------------------------------------------------------------------------- KiTS19 on real labels

KITS = DATA / "kits19-labels"


def kits_cases() -> list[Path]:
    return sorted(KITS.glob("case_*/segmentation.nii.gz")) if KITS.is_dir() else []


def mean_index(mask: np.ndarray, axis: int) -> float:
    """Mean voxel index of a mask along one axis (cheaper than argwhere on 512³ volumes)."""
    counts = mask.sum(axis=tuple(a for a in range(3) if a != axis))
    return float((counts * np.arange(mask.shape[axis])).sum() / counts.sum())


def crop_to_mask(mask: np.ndarray, affine: np.ndarray, margin: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Crop to the mask's bounding box; the affine's translation moves so world positions are kept."""
    starts = [max(int(np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0]) - margin, 0) for ax in range(3)]
    stops = [int(np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[-1]) + margin + 1 for ax in range(3)]
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ np.array(starts, dtype=np.float64) + affine[:3, 3]
    return mask[tuple(slice(a, b) for a, b in zip(starts, stops))], shifted


@pytest.mark.skipif(not KITS.is_dir(), reason="../shared/data/kits19-labels not present")
def test_kits19_real_labels_split_by_world_side_in_any_voxel_order():
    assert len(kits_cases()) == 6
    for path in kits_cases():
        image = nib.load(str(path))
        affine = image.affine
        # independent of the code: the stored affine's world x is -spacing · (third index), so the
        # right kidney (larger RAS x) has the smaller mean third index
        assert affine[0, 2] < 0 and affine[0, 0] == 0 and affine[0, 1] == 0
        # cropping only moves the origin: every voxel keeps its world position (and it keeps the test fast)
        kidney, affine = crop_to_mask(np.asanyarray(image.dataobj) > 0, affine)
        right = right_side_mask(kidney, affine)
        left = kidney & ~right
        assert right.any() and left.any(), path
        assert mean_index(right, 2) < mean_index(left, 2), path
        # the same voxels stored flipped along two axes must get the same sides
        flipped, flipped_affine = flip(kidney, affine, (0, 2))
        right_flipped = right_side_mask(flipped, flipped_affine)
        assert np.array_equal(np.flip(right_flipped, axis=(0, 2)), right), path
        # and stored with permuted axes (x first, like RAS files)
        permuted = np.ascontiguousarray(np.transpose(kidney, (2, 1, 0)))
        right_permuted = right_side_mask(permuted, affine[:, [2, 1, 0, 3]])
        assert np.array_equal(np.transpose(right_permuted, (2, 1, 0)), right), path


@pytest.mark.skipif(not KITS.is_dir(), reason="../shared/data/kits19-labels not present")
def test_kits19_converter_merges_tumour_and_splits_kidneys(tmp_path):
    source = KITS / "case_00017" / "segmentation.nii.gz"
    case_dir = tmp_path / "kits19" / "case_00017"
    case_dir.mkdir(parents=True)
    shutil.copy(source, case_dir / "segmentation.nii.gz")
    stored = nib.load(str(source))
    write(case_dir / "imaging.nii.gz", np.zeros(stored.shape, np.uint8), stored.affine)
    (case,) = find_cases(DatasetConfig("kits", "kits19", str(tmp_path / "kits19")), CLASSES)
    assert case.modality == "CT" and case.annotated == ("left_kidney", "right_kidney")
    image, mapped = case.load()
    raw = np.asanyarray(stored.dataobj)
    assert set(np.unique(mapped)) == {0, 3, 4}
    assert np.array_equal(mapped > 0, raw > 0)  # tumour voxels stay kidney
    # right kidney (4) at larger RAS x = smaller third index in this file's orientation
    assert image.affine[0, 2] < 0 and mean_index(mapped == 4, 2) < mean_index(mapped == 3, 2)


def test_kits19_single_kidney_is_sided_against_the_body_centre():
    kidney = np.zeros((20, 10, 10), bool)
    kidney[2:5, 4:6, 4:6] = True  # one kidney at low voxel x
    body = np.full(kidney.shape, -1000.0)
    body[0:12] = 0.0  # body centre at voxel x 5.5, kidney centroid at 3
    ras = np.eye(4)
    assert not right_side_mask(kidney, ras, body).any()  # lower RAS x than the body centre: left
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    assert right_side_mask(kidney, lps, body).sum() == kidney.sum()  # x axis points left: right kidney
    assert not right_side_mask(kidney, ras).any()  # no image: the volume centre (9.5) decides
