"""Random patch augmentation: mirroring, small in-plane rotations and scalings, intensity jitter.

Spatial transforms act on image and labels together (linear interpolation for the image,
nearest for the labels, the same sampling grid for both), so labels stay aligned with the
anatomy. Everything works on one numpy patch [X, Y, Z] and draws from the caller's
``numpy.random.Generator``, so a sampler stays a pure function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tctseg.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run, and how strongly.

    ``flip_axes`` is empty by default: mirroring X swaps the patient's left and right, which
    would make left and right kidney indistinguishable; mirroring Y or Z turns the anatomy
    upside down. Add axes (0 = X, 1 = Y, 2 = Z) for class sets without sides.
    Rotation and scaling act in the axial (X–Y) plane, where voxels are isotropic.
    Intensity jitter: ``image * scale + shift`` and a gamma curve on the patch's own range.
    """

    flip_axes: tuple[int, ...] = ()
    flip_probability: float = 0.5
    rotation_probability: float = 0.2
    max_rotation_degrees: float = 15.0
    scaling_probability: float = 0.2
    scale_range: tuple[float, float] = (0.85, 1.15)
    intensity_probability: float = 0.15
    intensity_scale_range: tuple[float, float] = (0.9, 1.1)
    intensity_shift: float = 0.1
    gamma_probability: float = 0.15
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_probability: float = 0.0
    max_noise_std: float = 0.05

    def __post_init__(self) -> None:
        probabilities = ("flip", "rotation", "scaling", "intensity", "gamma", "noise")
        for name in (f"{p}_probability" for p in probabilities):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment.{name}: expected a probability in [0, 1], got {value}")
        if any(axis not in (0, 1, 2) for axis in self.flip_axes):
            raise ConfigError(f"augment.flip_axes: expected axes among 0, 1, 2, got {list(self.flip_axes)}")
        for name in ("scale_range", "intensity_scale_range", "gamma_range"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ConfigError(f"augment.{name}: expected 0 < low <= high, got {[low, high]}")
        if self.max_rotation_degrees < 0 or self.intensity_shift < 0 or self.max_noise_std < 0:
            raise ConfigError("augment.max_rotation_degrees, augment.intensity_shift and augment.max_noise_std must be >= 0")


# ``train.augment_preset``: "light" (the defaults above, nnU-Net's probabilities for rotation
# and scaling) and "strong" (every transform on half the patches, wider ranges, Gaussian noise:
# for a handful of training subjects, where the light preset lets the net memorise them)
AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "light": AugmentConfig(),
    "strong": AugmentConfig(
        rotation_probability=0.5,
        max_rotation_degrees=30.0,
        scaling_probability=0.5,
        scale_range=(0.7, 1.4),
        intensity_probability=0.5,
        intensity_scale_range=(0.75, 1.25),
        gamma_probability=0.3,
        noise_probability=0.15,
    ),
}


def augment_patch(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, config: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Return augmented copies of ``image`` float32 [X, Y, Z] and ``labels`` integer [X, Y, Z]."""
    for axis in config.flip_axes:
        if rng.random() < config.flip_probability:
            image, labels = np.flip(image, axis), np.flip(labels, axis)

    angle = 0.0
    if config.max_rotation_degrees > 0 and rng.random() < config.rotation_probability:
        angle = math.radians(rng.uniform(-config.max_rotation_degrees, config.max_rotation_degrees))
    scale = 1.0
    if rng.random() < config.scaling_probability:
        scale = float(rng.uniform(*config.scale_range))
    if angle != 0.0 or scale != 1.0:
        image, labels = _rotate_and_scale_in_plane(image, labels, angle, scale)

    image = np.array(image, dtype=np.float32)  # copy: flips above are views
    if rng.random() < config.gamma_probability:
        low, high = float(image.min()), float(image.max())
        if high > low:
            unit = (image - low) / (high - low)
            image = (unit ** rng.uniform(*config.gamma_range) * (high - low) + low).astype(np.float32)
    if rng.random() < config.intensity_probability:
        image = image * np.float32(rng.uniform(*config.intensity_scale_range))
        image += np.float32(rng.uniform(-config.intensity_shift, config.intensity_shift))
    if config.noise_probability > 0 and rng.random() < config.noise_probability:
        std = rng.uniform(0.0, config.max_noise_std)
        image = image + rng.normal(0.0, std, size=image.shape).astype(np.float32)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(labels)


def _rotate_and_scale_in_plane(image: np.ndarray, labels: np.ndarray, angle: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by ``angle`` (radians) about Z and zoom by ``scale`` around the patch centre."""
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    # affine_transform maps OUTPUT coordinates to input ones: in = matrix @ out + offset
    matrix = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    centre = (np.asarray(image.shape, dtype=np.float64) - 1) / 2
    offset = centre - matrix @ centre
    # 'reflect' fills the corners with mirrored anatomy in both arrays, never with false background
    image = ndimage.affine_transform(np.asarray(image, dtype=np.float32), matrix, offset, order=1, mode="reflect")
    labels = ndimage.affine_transform(np.asarray(labels), matrix, offset, order=0, mode="reflect")
    return image, labels
