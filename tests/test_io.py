"""tctseg.data.io: reading NIfTI/DICOM with checks, atomic writing."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tctseg.data.io import Volume, load_label, load_volume, save_nifti
from tctseg.errors import DataError, OutputError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 3.0, 1.0]) if affine is None else affine), str(path))
    return path


def test_nifti_roundtrip_keeps_array_and_affine(tmp_path):
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    affine = np.array([[-2.0, 0, 0, 10], [0, -1.0, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]])
    vol = load_volume(write(tmp_path / "a.nii.gz", array, affine))
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, array)
    np.testing.assert_allclose(vol.affine, affine)
    assert vol.spacing == (2.0, 1.0, 3.0)


def test_singleton_fourth_dimension_is_squeezed(tmp_path):
    vol = load_volume(write(tmp_path / "a.nii.gz", np.ones((3, 4, 5, 1), np.float32)))
    assert vol.shape == (3, 4, 5)


@pytest.mark.parametrize("shape, word", [((4, 5), "2D"), ((3, 4, 5, 2), "4D")])
def test_2d_and_4d_are_rejected(tmp_path, shape, word):
    path = write(tmp_path / "bad.nii.gz", np.ones(shape, np.float32))
    with pytest.raises(DataError, match=f"bad.nii.gz: expected a 3D volume, got {word}"):
        load_volume(path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_voxels_are_rejected(tmp_path, value):
    array = np.zeros((3, 3, 3), np.float32)
    array[1, 1, 1] = value
    with pytest.raises(DataError, match=r"nan.nii.gz: 1 voxels are NaN or infinite"):
        load_volume(write(tmp_path / "nan.nii.gz", array))


def test_empty_volume_is_rejected(tmp_path):
    with pytest.raises(DataError, match="empty.nii.gz: empty volume"):
        load_volume(write(tmp_path / "empty.nii.gz", np.zeros((0, 3, 3), np.float32)))


def test_zero_spacing_is_rejected(tmp_path):
    image = nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4))
    image.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=2)  # a header whose y voxel size is 0
    image.set_qform(None, code=0)
    path = tmp_path / "flat.nii.gz"
    nib.save(image, str(path))
    with pytest.raises(DataError, match="flat.nii.gz: geometry is singular"):
        load_volume(path)


def test_truncated_file_is_rejected(tmp_path):
    path = write(tmp_path / "cut.nii.gz", np.random.default_rng(0).random((20, 20, 20)).astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.nii.gz: cannot read NIfTI file"):
        load_volume(path)


def test_corrupt_file_is_rejected(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    with pytest.raises(DataError, match="junk.nii.gz: cannot read NIfTI file"):
        load_volume(path)


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(DataError, match="nothere.nii.gz: file not found"):
        load_volume(tmp_path / "nothere.nii.gz")


def test_label_must_hold_whole_numbers(tmp_path):
    image = load_volume(write(tmp_path / "img.nii.gz", np.zeros((3, 3, 3), np.float32)))
    label = np.zeros((3, 3, 3), np.float32)
    label[0, 0, 0] = 1.5
    with pytest.raises(DataError, match="lab.nii.gz: label volume holds non-integer values"):
        load_label(write(tmp_path / "lab.nii.gz", label), image)


def test_label_float_whole_numbers_become_integers(tmp_path):
    label = np.zeros((3, 3, 3), np.float32)
    label[0, 0, 0] = 2
    out = load_label(write(tmp_path / "lab.nii.gz", label))
    assert np.issubdtype(out.dtype, np.integer) and out[0, 0, 0] == 2


def test_label_shape_mismatch_is_rejected(tmp_path):
    image = load_volume(write(tmp_path / "img.nii.gz", np.zeros((3, 3, 3), np.float32)))
    with pytest.raises(DataError, match=r"lab.nii.gz: label shape \[3, 3, 4\] differs from image shape \[3, 3, 3\]"):
        load_label(write(tmp_path / "lab.nii.gz", np.zeros((3, 3, 4), np.uint8)), image)


def test_label_affine_mismatch_is_rejected(tmp_path):
    image = load_volume(write(tmp_path / "img.nii.gz", np.zeros((3, 3, 3), np.float32)))
    shifted = np.diag([1.5, 1.5, 3.0, 1.0])
    shifted[0, 3] = 4.0
    with pytest.raises(DataError, match="lab.nii.gz: label geometry"):
        load_label(write(tmp_path / "lab.nii.gz", np.zeros((3, 3, 3), np.uint8), shifted), image)


def test_save_nifti_is_atomic_and_protects_inputs(tmp_path):
    src = write(tmp_path / "in.nii.gz", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(OutputError, match="refusing to write over an input"):
        save_nifti(np.ones((2, 2, 2)), np.eye(4), src, protect=[src])
    assert load_volume(src).array.max() == 0
    out = save_nifti(np.full((2, 3, 4), 7), np.diag([2.0, 2, 2, 1]), tmp_path / "sub" / "out.nii.gz", dtype=np.uint8)
    vol = load_volume(out)
    assert vol.array.max() == 7 and vol.spacing == (2.0, 2.0, 2.0)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.nii.gz"]  # no temp file left behind


def test_save_nifti_writes_the_same_bytes_for_the_same_array_and_keeps_a_scale(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    first = save_nifti(array, np.eye(4), tmp_path / "a" / "case.nii.gz", scale=1.0 / 255.0).read_bytes()
    second = save_nifti(array, np.eye(4), tmp_path / "b" / "case.nii.gz", scale=1.0 / 255.0).read_bytes()
    assert first == second and first[4:8] == b"\0\0\0\0"  # no time stamp in the gzip header
    assert first[10:first.index(b"\0", 10)] == b"case.nii"  # the final name (less .gz), not the temporary one
    image = nib.load(str(tmp_path / "a" / "case.nii.gz"))
    assert np.allclose(image.get_fdata(), array / 255.0) and np.array_equal(np.asarray(image.dataobj.get_unscaled()), array)


def test_real_dicom_series_geometry_matches_the_dicom_tags():
    pydicom = pytest.importorskip("pydicom")
    folder = DATA / "ct-example" / "dicom_series"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    vol = load_volume(folder)
    assert vol.shape == (512, 512, 20)
    slices = [pydicom.dcmread(str(p)) for p in sorted(folder.iterdir())]
    # independent fact: a slice's ImagePositionPatient (LPS) is the world position of its pixel (0, 0);
    # RAS negates x and y
    by_position = {}
    for ds in slices:
        lps = np.array([float(v) for v in ds.ImagePositionPatient])
        by_position[tuple(np.round(lps * [-1, -1, 1], 2))] = ds
    for k in (0, 19):
        world = vol.affine @ np.array([0, 0, k, 1.0])
        ds = by_position[tuple(np.round(world[:3], 2))]
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        # pixel_array is [row, column]; Volume is [column (i), row (j), k]
        np.testing.assert_allclose(vol.array[:, :, k], hu.T)
    row_dir = np.array([float(v) for v in slices[0].ImageOrientationPatient[:3]]) * [-1, -1, 1]
    np.testing.assert_allclose(vol.affine[:3, 0] / np.linalg.norm(vol.affine[:3, 0]), row_dir, atol=1e-6)
    assert np.isclose(vol.spacing[0], float(slices[0].PixelSpacing[1]))
