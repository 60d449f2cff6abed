"""Partial-label patch sampling, the training loader, and augmentation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from tctseg.data.augment import AugmentConfig, augment_patch
from tctseg.data.sampler import PatchSampler, make_train_loader
from tctseg.errors import ConfigError, DataError

NUM_CLASSES = 5  # 1 liver, 2 spleen, 3 left kidney, 4 right kidney, 5 pancreas
PATCH = (8, 8, 4)


@dataclass
class FakeCase:
    """Stand-in for a prepared case: the attributes the sampler reads."""

    case_id: str
    dataset: str
    modality: str
    annotated: tuple[int, ...]
    image: np.ndarray
    label: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def _case(case_id: str, dataset: str, annotated: tuple[int, ...], *, marker: float, shape=(40, 40, 20), organ_size=3) -> FakeCase:
    """A volume of constant ``marker`` (tells the dataset from the image) with one small cube per annotated class."""
    image = np.full(shape, marker, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    locations = {}
    for k, class_id in enumerate(annotated):
        corner = (4 + 10 * k, 30 - 8 * k, 3 + 4 * k)
        box = tuple(slice(c, c + organ_size) for c in corner)
        label[box] = class_id
        image[box] = marker + 0.5
        locations[str(class_id)] = np.argwhere(label == class_id).tolist()
    return FakeCase(case_id, dataset, "CT", annotated, image, label, {"class_locations": locations})


# Three partially labeled datasets, unequal sizes (kidney dataset annotates both kidneys).
MARKERS = {"kits": 1.0, "liver": 2.0, "spleen": 3.0}
ANNOTATED = {"kits": (3, 4), "liver": (1,), "spleen": (2,)}


def _cases() -> list[FakeCase]:
    counts = {"kits": 4, "liver": 2, "spleen": 1}
    return [_case(f"{d}_{i}", d, ANNOTATED[d], marker=MARKERS[d]) for d in counts for i in range(counts[d])]


def _dataset_of(sample: dict[str, torch.Tensor]) -> str:
    base = float(sample["image"].min())
    return next(d for d, m in MARKERS.items() if m == base)


def _stream(**kwargs) -> list[dict[str, torch.Tensor]]:
    kwargs.setdefault("samples_per_epoch", 12)
    return list(PatchSampler(_cases(), NUM_CLASSES, PATCH, **kwargs))


def _same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in ("image", "labels", "annotated"))


def test_samples_have_the_documented_shapes_and_types() -> None:
    samples = _stream(samples_per_epoch=5)
    assert len(samples) == 5
    for s in samples:
        assert s["image"].dtype == torch.float32 and tuple(s["image"].shape) == (1, *PATCH)
        assert s["labels"].dtype == torch.int64 and tuple(s["labels"].shape) == PATCH
        assert s["annotated"].dtype == torch.bool and tuple(s["annotated"].shape) == (NUM_CLASSES,)


def test_stream_is_a_function_of_seed_epoch_and_rank() -> None:
    base = _stream(seed=7, epoch=3, rank=1, world_size=2)
    assert _same(base, _stream(seed=7, epoch=3, rank=1, world_size=2))
    assert not _same(base, _stream(seed=7, epoch=3, rank=0, world_size=2))
    assert not _same(base, _stream(seed=7, epoch=4, rank=1, world_size=2))
    assert not _same(base, _stream(seed=8, epoch=3, rank=1, world_size=2))
    sampler = PatchSampler(_cases(), NUM_CLASSES, PATCH, seed=7, epoch=0, rank=1, world_size=2, samples_per_epoch=12)
    sampler.set_epoch(3)  # resuming at epoch 3 reproduces that epoch exactly
    assert _same(base, list(sampler))


def test_loader_batches_are_exact_and_independent_of_worker_count() -> None:
    kwargs = dict(foreground_fraction=0.5, seed=1, epoch=2)
    single = list(make_train_loader(_cases(), NUM_CLASSES, PATCH, 3, 5, num_workers=0, **kwargs))
    assert len(single) == 5
    for batch in single:
        assert tuple(batch["image"].shape) == (3, 1, *PATCH) and tuple(batch["labels"].shape) == (3, *PATCH)
        assert tuple(batch["annotated"].shape) == (3, NUM_CLASSES) and batch["annotated"].dtype == torch.bool
    multi = list(make_train_loader(_cases(), NUM_CLASSES, PATCH, 3, 5, num_workers=2, **kwargs))
    assert len(multi) == 5
    assert all(torch.equal(a[k], b[k]) for a, b in zip(single, multi) for k in a)
    datasets_per_batch = [{float(v) for v in b["image"].amin(dim=(1, 2, 3, 4))} for b in single]
    assert any(len(d) > 1 for d in datasets_per_batch)  # batches mix datasets


def test_full_foreground_fraction_always_shows_an_annotated_class() -> None:
    # 3-voxel organs in a 40x40x20 volume: a random 8x8x4 patch seldom holds one
    hits = [int((s["labels"] > 0).any()) for s in _stream(foreground_fraction=1.0, samples_per_epoch=60)]
    assert sum(hits) == 60
    random_hits = [int((s["labels"] > 0).any()) for s in _stream(foreground_fraction=0.0, samples_per_epoch=60)]
    assert sum(random_hits) < 30
    for s in _stream(foreground_fraction=1.0, samples_per_epoch=30):
        present = set(torch.unique(s["labels"]).tolist()) - {0}
        annotated = {j + 1 for j in torch.nonzero(s["annotated"]).flatten().tolist()}
        assert present and present <= annotated


def test_small_volumes_are_padded_with_their_minimum_and_background() -> None:
    image = np.arange(5 * 6 * 3, dtype=np.float32).reshape(5, 6, 3) - 10.0
    label = np.zeros((5, 6, 3), dtype=np.uint8)
    label[2, 3, 1] = 1
    case = FakeCase("tiny", "liver", "CT", (1,), image, label, {"class_locations": {"1": [[2, 3, 1]]}})
    sample = next(iter(PatchSampler([case], NUM_CLASSES, PATCH, foreground_fraction=1.0, samples_per_epoch=1)))
    patch, labels = sample["image"][0].numpy(), sample["labels"].numpy()
    # pads: X 8-5 -> (1, 2), Y 8-6 -> (1, 1), Z 4-3 -> (0, 1)
    assert np.array_equal(patch[1:6, 1:7, 0:3], image)
    assert np.all(patch[0] == -10.0) and np.all(patch[6:] == -10.0) and np.all(patch[:, :, 3] == -10.0)
    assert labels[3, 4, 1] == 1 and labels.sum() == 1


def test_annotated_mask_matches_each_samples_dataset() -> None:
    for s in _stream(samples_per_epoch=40, foreground_fraction=0.5):
        expected = np.zeros(NUM_CLASSES, dtype=bool)
        expected[[j - 1 for j in ANNOTATED[_dataset_of(s)]]] = True
        assert np.array_equal(s["annotated"].numpy(), expected)


def test_dataset_weights_set_the_odds() -> None:
    # default: every dataset equally likely, although kits has 4 cases and spleen 1
    sampler = PatchSampler(_cases(), NUM_CLASSES, PATCH, samples_per_epoch=600)
    counts = {d: 0 for d in MARKERS}
    for i in range(600):
        counts[_dataset_of(sampler.sample(i))] += 1
    assert all(abs(c / 600 - 1 / 3) < 0.07 for c in counts.values())
    weighted = PatchSampler(_cases(), NUM_CLASSES, PATCH, dataset_weights={"kits": 6.0, "liver": 2.0, "spleen": 0.0}, samples_per_epoch=600)
    counts = {d: 0 for d in MARKERS}
    for i in range(600):
        counts[_dataset_of(weighted.sample(i))] += 1
    assert counts["spleen"] == 0 and abs(counts["kits"] / 600 - 0.75) < 0.07


def test_bad_settings_and_cases_are_refused() -> None:
    with pytest.raises(ConfigError, match="dataset_weights.word"):
        PatchSampler(_cases(), NUM_CLASSES, PATCH, dataset_weights={"word": 1.0})
    with pytest.raises(ConfigError, match="patch_size"):
        PatchSampler(_cases(), NUM_CLASSES, (8, 8))
    with pytest.raises(ConfigError, match="foreground_fraction"):
        PatchSampler(_cases(), NUM_CLASSES, PATCH, foreground_fraction=1.5)
    bad = _case("odd", "liver", (6,), marker=2.0)
    with pytest.raises(DataError, match="liver/odd"):
        PatchSampler([bad], NUM_CLASSES, PATCH)
    with pytest.raises(ConfigError, match="flip_axes"):
        AugmentConfig(flip_axes=(3,))


def test_augmentation_keeps_labels_on_the_anatomy() -> None:
    image = np.zeros((32, 32, 8), dtype=np.float32)
    labels = np.zeros((32, 32, 8), dtype=np.uint8)
    image[6:16, 18:26, 2:6] = 1.0  # an off-centre bright block, labelled 1
    labels[6:16, 18:26, 2:6] = 1
    config = AugmentConfig(
        flip_axes=(0, 1, 2), rotation_probability=1.0, max_rotation_degrees=30.0, scaling_probability=1.0,
        intensity_probability=0.0, gamma_probability=0.0,
    )
    moved = 0
    for draw in range(8):
        new_image, new_labels = augment_patch(image, labels, np.random.default_rng(draw), config)
        assert new_image.shape == image.shape and new_image.dtype == np.float32 and new_labels.dtype == np.uint8
        assert set(np.unique(new_labels)) <= {0, 1}  # nearest neighbour: no invented ids
        bright, labelled = new_image > 0.5, new_labels == 1
        dice = 2 * (bright & labelled).sum() / (bright.sum() + labelled.sum())
        assert dice > 0.9
        moved += int(not np.array_equal(new_labels, labels))
    assert moved == 8


def test_noise_changes_intensities_by_about_its_std_and_never_the_labels() -> None:
    image = np.full((16, 16, 8), 0.5, dtype=np.float32)
    labels = (np.arange(16 * 16 * 8).reshape(16, 16, 8) % 3).astype(np.uint8)
    config = AugmentConfig(rotation_probability=0.0, scaling_probability=0.0, intensity_probability=0.0,
                           gamma_probability=0.0, noise_probability=1.0, max_noise_std=0.05)
    stds = []
    for draw in range(6):
        new_image, new_labels = augment_patch(image, labels, np.random.default_rng(draw), config)
        assert np.array_equal(new_labels, labels) and new_image.dtype == np.float32
        assert abs(float(new_image.mean()) - 0.5) < 0.01
        stds.append(float(new_image.std()))
    assert 0.0 < max(stds) <= 0.06 and len(set(stds)) == 6  # std drawn from U(0, 0.05) per patch


def test_strong_preset_is_strictly_stronger_than_light() -> None:
    from tctseg.data.augment import AUGMENT_PRESETS

    light, strong = AUGMENT_PRESETS["light"], AUGMENT_PRESETS["strong"]
    for name in ("rotation", "scaling", "intensity", "gamma", "noise"):
        assert getattr(strong, f"{name}_probability") > getattr(light, f"{name}_probability"), name
    assert strong.max_rotation_degrees > light.max_rotation_degrees
    assert strong.scale_range[0] < light.scale_range[0] and strong.scale_range[1] > light.scale_range[1]
    assert strong.flip_axes == light.flip_axes == ()  # never mirror left and right


def test_intensity_jitter_changes_only_intensities_and_sampler_applies_augmentation() -> None:
    image = np.linspace(0, 1, 16 * 16 * 4, dtype=np.float32).reshape(16, 16, 4)
    labels = (image > 0.5).astype(np.uint8)
    config = AugmentConfig(rotation_probability=0.0, scaling_probability=0.0, intensity_probability=1.0, gamma_probability=1.0)
    new_image, new_labels = augment_patch(image, labels, np.random.default_rng(0), config)
    assert np.array_equal(new_labels, labels) and not np.allclose(new_image, image)
    assert np.all(np.diff(new_image.ravel()) > 0)  # monotone: gamma and scale keep the order
    plain = _stream(samples_per_epoch=6, seed=3)
    jittered = _stream(samples_per_epoch=6, seed=3, augment=config)
    assert not _same(plain, jittered)
