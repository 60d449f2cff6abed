"""DSC and HD95 against values computed by hand on tiny masks with anisotropic spacing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tctseg.metrics.masks import dice, hd95, image_diagonal_mm

SPACING = (1.0, 1.0, 3.0)  # 1 mm in-plane, 3 mm slices


def _box(shape, lo, hi):
    mask = np.zeros(shape, dtype=bool)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return mask


def test_boxes_shifted_one_voxel_along_thick_axis():
    # 3x3x2 boxes, B one slice further along Z: 9 of 18 voxels shared.
    a = _box((6, 6, 6), (1, 1, 1), (4, 4, 3))
    b = _box((6, 6, 6), (1, 1, 2), (4, 4, 4))
    assert dice(a, b) == pytest.approx(2 * 9 / (18 + 18))
    # Every voxel is a surface voxel (2 thick); half of each surface is 1 slice (3 mm) away
    # from the other, so both directed 95th percentiles are 3 mm.
    assert hd95(a, b, SPACING) == pytest.approx(3.0)


def test_boxes_shifted_one_voxel_in_plane_cost_one_mm():
    a = _box((6, 6, 6), (1, 1, 1), (4, 4, 3))
    b = _box((6, 6, 6), (2, 1, 1), (5, 4, 3))
    # Shared: x in 2..3 (2 columns) x 3 x 2 = 12 voxels of 18.
    assert dice(a, b) == pytest.approx(2 * 12 / 36)
    # 6 of 18 surface voxels are 1 mm away: the 95th percentile (index 16.15 of 0..17) is 1.
    assert hd95(a, b, SPACING) == pytest.approx(1.0)


def test_single_voxels_diagonal_distance_uses_spacing():
    a = np.zeros((5, 5, 5), dtype=bool)
    b = np.zeros((5, 5, 5), dtype=bool)
    a[1, 1, 1] = True
    b[3, 1, 2] = True  # 2 voxels along x (2 mm) and 1 along z (3 mm)
    assert dice(a, b) == 0.0
    assert hd95(a, b, SPACING) == pytest.approx(math.sqrt(2**2 + 3**2))
    assert hd95(a, b, (0.5, 0.5, 0.5)) == pytest.approx(math.sqrt(1.0**2 + 0.5**2))


def test_hd95_is_the_larger_directed_percentile():
    # pred: one voxel; GT: that voxel and one 2 slices (6 mm) away.
    pred = np.zeros((5, 5, 6), dtype=bool)
    gt = np.zeros((5, 5, 6), dtype=bool)
    pred[2, 2, 1] = True
    gt[2, 2, 1] = gt[2, 2, 3] = True
    # pred→GT: [0]; GT→pred: [0, 6] whose 95th percentile (linear) is 0.95·6 = 5.7.
    assert hd95(pred, gt, SPACING) == pytest.approx(5.7)
    assert hd95(gt, pred, SPACING) == pytest.approx(5.7)
    assert dice(pred, gt) == pytest.approx(2 * 1 / 3)


def test_identical_masks():
    a = _box((6, 6, 6), (1, 1, 1), (5, 4, 3))
    assert dice(a, a) == 1.0
    assert hd95(a, a, SPACING) == 0.0


def test_both_empty_is_perfect():
    empty = np.zeros((4, 5, 6), dtype=bool)
    assert dice(empty, empty) == 1.0
    assert hd95(empty, empty, SPACING) == 0.0


@pytest.mark.parametrize("which", ["pred", "gt"])
def test_one_empty_is_worst_case_finite(which):
    shape = (4, 5, 6)
    full = _box(shape, (1, 1, 1), (3, 3, 3))
    empty = np.zeros(shape, dtype=bool)
    pred, gt = (empty, full) if which == "pred" else (full, empty)
    diagonal = math.sqrt(4**2 + 5**2 + (6 * 3.0) ** 2)  # field of view 4 x 5 x 18 mm
    assert image_diagonal_mm(shape, SPACING) == pytest.approx(diagonal)
    assert dice(pred, gt) == 0.0
    assert hd95(pred, gt, SPACING) == pytest.approx(diagonal)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool))
