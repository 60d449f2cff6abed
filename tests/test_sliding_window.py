"""Sliding-window probabilities: blending, padding of small volumes, flip TTA, and LCC post-processing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tctseg.config import config_from_dict
from tctseg.inference import keep_largest_component, sliding_window_probabilities
from tctseg.inference.sliding_window import FLIP_COMBINATIONS
from tctseg.methods import build_method

PATCH = (32, 32, 16)


class ConstantLogits(nn.Module):
    """Stand-in method: the same logits (1, 2, 3) at every voxel, whatever the image."""

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        logits = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1, 1)
        return logits.expand(image.shape[0], 3, *image.shape[2:]).clone()


class SymmetricBlur(nn.Module):
    """Stand-in method that is flip-equivariant but not pointwise: a 3×3×3 box blur (zero padding)
    turned into 2-class logits. Flipping its input flips its output along the same axes."""

    def __init__(self) -> None:
        super().__init__()
        self.blur = nn.Conv3d(1, 1, 3, padding=1, bias=False)
        nn.init.constant_(self.blur.weight, 1.0 / 27.0)

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        smooth = self.blur(image)
        return torch.cat([torch.zeros_like(smooth), 8.0 * (smooth - 0.5)], dim=1)


class XRamp(nn.Module):
    """Stand-in method that is NOT flip-equivariant: class-1 logit grows along the window's X."""

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-4.0, 4.0, image.shape[2]).view(1, 1, -1, 1, 1).expand_as(image)
        return torch.cat([torch.zeros_like(image), ramp], dim=1)


def test_constant_logits_give_their_softmax_everywhere():
    image = np.random.default_rng(0).random((40, 36, 20), dtype=np.float32)
    probs = sliding_window_probabilities(ConstantLogits(), image, PATCH, overlap=0.5)
    # softmax(1, 2, 3) by hand: e^k / (e^1 + e^2 + e^3)
    total = math.e + math.e**2 + math.e**3
    expected = torch.tensor([math.e / total, math.e**2 / total, math.e**3 / total])
    assert probs.shape == (3, 40, 36, 20)
    assert probs.dtype == torch.float32 and probs.device.type == "cpu"
    assert torch.allclose(probs, expected.view(3, 1, 1, 1).expand_as(probs), atol=1e-5)


def test_volume_smaller_than_the_patch_is_padded_and_cropped_back():
    config = config_from_dict({"classes": ["a", "b"], "datasets": [], "network": {"width": 4, "depth": 3}})
    torch.manual_seed(0)
    image = np.random.default_rng(1).random((10, 12, 5), dtype=np.float32)
    probs = sliding_window_probabilities(build_method(config), image, PATCH)
    assert probs.shape == (3, 10, 12, 5)
    assert torch.allclose(probs.sum(0), torch.ones(10, 12, 5), atol=1e-5)
    constant = sliding_window_probabilities(ConstantLogits(), torch.from_numpy(image), PATCH)
    assert constant.shape == (3, 10, 12, 5)
    assert torch.allclose(constant[2], torch.full((10, 12, 5), math.e**3 / (math.e + math.e**2 + math.e**3)), atol=1e-5)


def test_real_network_probabilities_are_distributions_over_n_plus_one_classes():
    config = config_from_dict({"classes": ["a", "b", "c"], "datasets": [], "network": {"width": 4, "depth": 3}})
    torch.manual_seed(0)
    image = np.random.default_rng(2).random((40, 34, 22), dtype=np.float32)
    probs = sliding_window_probabilities(build_method(config), image, PATCH, overlap=0.25, sw_batch_size=2)
    assert probs.shape == (4, 40, 34, 22)
    assert (probs >= 0).all() and torch.allclose(probs.sum(0), torch.ones(40, 34, 22), atol=1e-5)


def test_flip_tta_of_a_flip_equivariant_model_equals_the_plain_result():
    image = np.random.default_rng(3).random((44, 40, 24), dtype=np.float32)
    plain = sliding_window_probabilities(SymmetricBlur(), image, PATCH, overlap=0.5)
    tta = sliding_window_probabilities(SymmetricBlur(), image, PATCH, overlap=0.5, tta_flip=True)
    assert torch.allclose(tta, plain, atol=1e-5)
    # and the stand-in is not trivial: its probabilities vary across the volume
    assert float(plain[1].std()) > 0.05


def test_flip_tta_averages_all_eight_flip_combinations():
    assert len(FLIP_COMBINATIONS) == 8 and len(set(FLIP_COMBINATIONS)) == 8
    image = np.zeros((32, 32, 16), dtype=np.float32)  # exactly one window: no blending
    plain = sliding_window_probabilities(XRamp(), image, PATCH)
    tta = sliding_window_probabilities(XRamp(), image, PATCH, tta_flip=True)
    # by hand: half the combinations flip X, so p1(i) = (sigmoid(r_i) + sigmoid(r_{31-i})) / 2 = 1/2
    ramp = torch.linspace(-4.0, 4.0, 32)
    assert torch.allclose(plain[1, :, 0, 0], torch.sigmoid(ramp), atol=1e-5)
    assert torch.allclose(tta[1], torch.full((32, 32, 16), 0.5), atol=1e-5)


def test_overlap_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_probabilities(ConstantLogits(), np.zeros((8, 8, 8), np.float32), PATCH, overlap=1.0)


def test_largest_component_keeps_the_biggest_blob_per_class():
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[1:3, 1:3, 1:3] = 1  # 8 voxels: kept
    labels[7, 7, 7] = 1  # 1 voxel, apart: removed
    labels[3, 3, 3] = 1  # touches the big blob at a corner only: kept (26-connectivity)
    labels[5:7, 0, 0] = 2  # class 2, one component: kept
    cleaned = keep_largest_component(labels)
    expected = labels.copy()
    expected[7, 7, 7] = 0
    assert cleaned.dtype == labels.dtype
    np.testing.assert_array_equal(cleaned, expected)
    assert labels[7, 7, 7] == 1  # the input is not modified
