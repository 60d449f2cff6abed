"""Preprocessing: intensity normalisation, RAS reorientation, resampling, and the inverse back to the original grid."""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pytest

from tctseg.preprocessing import normalise_ct, normalise_mr, plan_geometry, to_original, to_prepared
from tctseg.preprocessing.intensity import display_window


def test_ct_clip_and_scale():
    hu = np.array([-3000, -1024, 0, 512, 1024, 3000], np.float32).reshape(1, 2, 3)
    out = normalise_ct(hu, (-1024, 1024))
    np.testing.assert_allclose(out.ravel(), [0, 0, 0.5, 0.75, 1, 1])
    assert out.dtype == np.float32


def test_mr_percentile_scaling():
    values = np.arange(1001, dtype=np.float32).reshape(7, 11, 13)  # percentiles 0.5/99.5 are 5 and 995
    out = normalise_mr(values, (0.5, 99.5))
    flat = out.ravel()
    assert flat[0] == 0 and flat[1000] == 1 and flat[5] == 0 and flat[995] == 1
    assert np.isclose(flat[500], 0.5)
    assert normalise_mr(np.full((2, 2, 2), 7.0), (0.5, 99.5)).max() == 0  # flat volume: no division by 0


def test_display_window_follows_the_recorded_modality_not_the_values():
    hu = np.array([-1000.0, -1000.0, 40.0, 60.0, 300.0])  # air and soft tissue in HU
    assert display_window(hu, "CT") == (-160.0, 240.0)  # W 400, L 40
    assert display_window(np.array([0.0, 500.0, 900.0]), "CT") == (-160.0, 240.0)
    low, high = display_window(hu, "MR")  # no absolute scale: the 1st-99th percentile
    assert (low, high) == tuple(float(v) for v in np.percentile(hu, [1, 99]))
    assert display_window(hu, None) == (low, high)  # not recorded: no scale assumed either
    assert display_window(np.full(4, 7.0), "MR") == (7.0, 8.0)  # flat: one unit wide
    assert display_window(np.zeros(0), "CT") == (0.0, 1.0)


def test_prepared_affine_maps_voxel_centres_to_world():
    # 4 voxels of 1 mm become 2 of 2 mm: the first new voxel's centre is halfway between old voxels 0 and 1
    geometry = plan_geometry(np.eye(4), (4, 4, 6), (2.0, 2.0, 3.0))
    assert geometry.prepared_shape == (2, 2, 2)
    np.testing.assert_allclose(geometry.prepared_affine @ [0, 0, 0, 1], [0.5, 0.5, 1.0, 1])
    np.testing.assert_allclose(geometry.prepared_affine @ [1, 1, 1, 1], [2.5, 2.5, 4.0, 1])


def lps_affine(shape, spacing, origin=(30.0, -10.0, 5.0)):
    a = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    a[:3, 3] = origin
    return a


def test_lps_volume_becomes_ras_and_keeps_world_positions():
    shape, spacing = (20, 16, 12), (1.0, 1.0, 3.0)
    array = np.zeros(shape, np.float32)
    array[3, 12, 7] = 1.0  # one bright voxel at a known world position
    affine = lps_affine(shape, spacing)
    prepared, geometry = to_prepared(array, affine, spacing)
    assert geometry.orientation == ("L", "P", "S") and nib.aff2axcodes(geometry.prepared_affine) == ("R", "A", "S")
    assert prepared.shape == shape  # same spacing: a pure flip, no interpolation
    found = np.argwhere(prepared == 1.0)
    assert len(found) == 1
    np.testing.assert_allclose(geometry.prepared_affine @ np.r_[found[0], 1], affine @ [3, 12, 7, 1])


def blob_label(shape):
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    label = np.zeros(shape, np.uint8)
    label[(x + 0.3) ** 2 + y**2 + z**2 < 0.25] = 1
    label[(x - 0.4) ** 2 + (y - 0.2) ** 2 + z**2 < 0.12] = 2
    return label


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("storage", ["RAS", "LPS", "permuted"])
def test_label_round_trip_to_the_original_grid(storage):
    spacing = (0.8, 0.9, 2.5)
    label = blob_label((50, 44, 18))
    affine = np.diag([*spacing, 1.0])
    if storage == "LPS":
        affine = lps_affine(label.shape, spacing)
    elif storage == "permuted":  # stored slices-first, like KiTS19: voxel axes (z, y, x)
        label = np.ascontiguousarray(np.transpose(label, (2, 1, 0)))
        affine = np.array([[0, 0, -spacing[0], 40], [0, -spacing[1], 0, 0], [spacing[2], 0, 0, -20], [0, 0, 0, 1.0]])
    prepared, geometry = to_prepared(label, affine, (1.0, 1.0, 3.0), mode="nearest")
    assert prepared.dtype == np.uint8 and nib.aff2axcodes(geometry.prepared_affine) == ("R", "A", "S")
    back = to_original(prepared, geometry, mode="nearest")
    assert back.shape == label.shape and back.dtype == np.uint8
    for c in (1, 2):
        assert dice(back == c, label == c) > 0.9
    # probabilities [C, X', Y', Z'] come back linearly interpolated onto the exact original grid
    probs = np.stack([(prepared == c).astype(np.float32) for c in range(3)])
    back_probs = to_original(probs, geometry, mode="linear")
    assert back_probs.shape == (3, *label.shape)
    np.testing.assert_allclose(back_probs.sum(axis=0), 1.0, atol=1e-5)
    assert dice(back_probs.argmax(axis=0) == 1, label == 1) > 0.9


def test_same_spacing_round_trip_is_exact():
    label = blob_label((12, 10, 8))
    affine = lps_affine(label.shape, (1.0, 1.0, 3.0))
    prepared, geometry = to_prepared(label, affine, (1.0, 1.0, 3.0), mode="nearest")
    np.testing.assert_array_equal(to_original(prepared, geometry, mode="nearest"), label)


def test_a_full_ct_slab_resamples_to_the_papers_grid():
    # its speed is the benchmark's preprocess_ct_s (benchmarks/run.py), not a timed test
    ct = np.random.default_rng(0).normal(0, 300, size=(512, 512, 100)).astype(np.float32)
    prepared, geometry = to_prepared(normalise_ct(ct, (-1024, 1024)), np.diag([0.7, 0.7, 2.5, 1.0]), (1.0, 1.0, 3.0))
    assert prepared.shape == geometry.prepared_shape == (358, 358, 83)


@pytest.mark.parametrize("task_probabilities", [False, True])
def test_labels_back_in_the_scans_order_equal_reorienting_every_class_map(task_probabilities):
    """labels_in_original_space takes the argmax on the RAS grid and reorients the uint8 maps
    once: the same labels, probabilities and task masks as reorienting each class map first."""
    from tctseg.inference.export import TASK_THRESHOLD, labels_in_original_space

    # a permuted, flipped scan (axes z, -x, y) at anisotropic spacing
    affine = np.array([[0, -1.5, 0, 10], [0, 0, 2.0, -5], [3.0, 0, 0, 7], [0, 0, 0, 1]])
    geometry = plan_geometry(affine, (11, 13, 9), (2.0, 2.0, 2.0))
    rng = np.random.default_rng(0)
    channels = 3
    probabilities = rng.random((channels, *geometry.prepared_shape)).astype(np.float32)
    labels, scaled, masks = labels_in_original_space(
        probabilities, geometry, want_probabilities=True, task_probabilities=task_probabilities,
        want_task_masks=task_probabilities,
    )
    maps = np.stack([to_original(probabilities[c], geometry, mode="linear") for c in range(channels)])
    if task_probabilities:
        best = np.where(maps.max(0) > TASK_THRESHOLD, maps.argmax(0) + 1, 0)
        np.testing.assert_array_equal(masks, np.moveaxis(maps > TASK_THRESHOLD, 0, -1).astype(np.uint8))
    else:
        best = maps.argmax(0)
    assert labels.shape == (11, 13, 9) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, best)
    np.testing.assert_array_equal(scaled, np.moveaxis(np.clip(np.rint(maps * 255.0), 0, 255).astype(np.uint8), 0, -1))
