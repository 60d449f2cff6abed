"""Partial-label patch sampling from prepared cases, and the training loader built on it.

A prepared case (see :mod:`tctseg.preprocessing.cache`) is used through these attributes
only: ``case_id``, ``dataset``, ``annotated`` (global ids 1..N its dataset labels),
``meta["class_locations"]`` ({str(global id): [[x, y, z], ...]}), and the lazily loaded
``image`` float32 [X, Y, Z] and ``label`` uint8 [X, Y, Z] arrays.

Every sample is drawn like this:

1. a dataset, each equally likely by default (so a 32-case dataset is seen as often as a
   224-case one; ``dataset_weights`` changes the odds), then a case of it uniformly;
2. with probability ``foreground_fraction`` a centre voxel from ``class_locations`` of one
   annotated class present in the case (classes equally likely, so a small organ is seen),
   otherwise a uniformly random patch position;
3. the patch is cut (and padded where the volume is smaller: image with the volume's minimum,
   labels with 0), optionally augmented, and returned with the case's annotated mask.

Reproducibility: sample ``i`` of an epoch draws from a numpy Generator seeded by
``SeedSequence([seed, epoch, rank, i])``, so the stream is a pure function of (seed, epoch,
rank), different for every rank and epoch, and the SAME whatever the number of loader
workers (workers split the samples in whole batches, and the DataLoader returns them in
order). Training resumed at an epoch boundary therefore sees exactly the same patches.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tctseg.data.augment import AugmentConfig, augment_patch
from tctseg.errors import ConfigError, DataError
from tctseg.settings import check_patch_size


class PatchSampler(IterableDataset):
    """An epoch of random training patches, each a dict of tensors.

    Yields ``image`` float32 [1, X, Y, Z], ``labels`` int64 [X, Y, Z] (global ids, 0 =
    background or not annotated) and ``annotated`` bool [N] (``annotated[j-1]``: the sample's
    dataset labels class j). ``samples_per_epoch`` samples per rank; with loader workers,
    samples are handed out in blocks of ``block_size`` (the batch size) round-robin.
    """

    def __init__(
        self,
        cases: Sequence[Any],
        num_classes: int,
        patch_size: Sequence[int],
        *,
        foreground_fraction: float = 0.33,
        dataset_weights: Mapping[str, float] | None = None,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        samples_per_epoch: int = 250,
        block_size: int = 1,
    ) -> None:
        super().__init__()
        if not cases:
            raise DataError("no training cases to sample patches from")
        self.patch_size = check_patch_size("train.patch_size", patch_size)
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ConfigError(f"train.foreground_fraction: expected a value in [0, 1], got {foreground_fraction}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world size {world_size}")
        if samples_per_epoch < 0 or block_size < 1:
            raise ConfigError(f"samples_per_epoch ({samples_per_epoch}) must be >= 0 and block_size ({block_size}) >= 1")
        self.cases = list(cases)
        self.num_classes = int(num_classes)
        self.foreground_fraction = float(foreground_fraction)
        self.augment = augment
        self.seed, self.epoch, self.rank, self.world_size = int(seed), int(epoch), int(rank), int(world_size)
        self.samples_per_epoch, self.block_size = int(samples_per_epoch), int(block_size)

        self.datasets = sorted({case.dataset for case in self.cases})
        self._cases_of = [[i for i, c in enumerate(self.cases) if c.dataset == d] for d in self.datasets]
        self.dataset_probabilities = _dataset_probabilities(self.datasets, dataset_weights)
        self._annotated_masks = [self._annotated_mask(case) for case in self.cases]
        self._foreground = [_foreground_locations(case) for case in self.cases]
        self._pad_values: dict[int, float] = {}

    def set_epoch(self, epoch: int) -> None:
        """Draw the next epoch's patches (takes effect the next time the loader is iterated)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        blocks = math.ceil(self.samples_per_epoch / self.block_size)
        for block in range(worker, blocks, workers):
            for index in range(block * self.block_size, min((block + 1) * self.block_size, self.samples_per_epoch)):
                yield self.sample(index)

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        """Sample ``index`` of this (seed, epoch, rank): always the same patch."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, self.rank, int(index)]))
        dataset = int(rng.choice(len(self.datasets), p=self.dataset_probabilities))
        members = self._cases_of[dataset]
        case_index = members[int(rng.integers(len(members)))]
        case = self.cases[case_index]

        centre = None
        foreground = self._foreground[case_index]
        if foreground and rng.random() < self.foreground_fraction:
            locations = foreground[int(rng.integers(len(foreground)))]
            centre = locations[int(rng.integers(len(locations)))]
        image, labels = self._cut_patch(case_index, case, centre, rng)
        if self.augment is not None:
            image, labels = augment_patch(image, labels, rng, self.augment)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)[None]),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "annotated": torch.from_numpy(self._annotated_masks[case_index].copy()),
        }

    def _annotated_mask(self, case: Any) -> np.ndarray:
        mask = np.zeros(self.num_classes, dtype=bool)
        for class_id in case.annotated:
            if not 1 <= int(class_id) <= self.num_classes:
                raise DataError(
                    f"case {case.dataset}/{case.case_id}: annotated class id {class_id} is outside 1..{self.num_classes}"
                )
            mask[int(class_id) - 1] = True
        return mask

    def _cut_patch(
        self, case_index: int, case: Any, centre: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Image float32 and labels [X, Y, Z] of patch size; ``centre`` (a voxel) lies inside it."""
        volume, label = case.image, case.label
        if label is None:
            raise DataError(f"case {case.dataset}/{case.case_id}: has no label volume to train on")
        if volume.ndim != 3 or volume.shape != label.shape:
            raise DataError(
                f"case {case.dataset}/{case.case_id}: image {volume.shape} and label {label.shape} must be equal 3D shapes"
            )
        box = []
        for axis, (size, patch) in enumerate(zip(volume.shape, self.patch_size)):
            if size <= patch:
                start = 0
            elif centre is None:
                start = int(rng.integers(0, size - patch + 1))
            else:  # clipping keeps the centre voxel inside the patch
                start = int(np.clip(int(centre[axis]) - patch // 2, 0, size - patch))
            box.append(slice(start, start + patch))
        image = np.asarray(volume[tuple(box)], dtype=np.float32)
        labels = np.asarray(label[tuple(box)])
        if image.shape != self.patch_size:
            pad = [((p - s) // 2, p - s - (p - s) // 2) for s, p in zip(image.shape, self.patch_size)]
            if case_index not in self._pad_values:
                self._pad_values[case_index] = float(np.min(volume))
            image = np.pad(image, pad, mode="constant", constant_values=self._pad_values[case_index])
            labels = np.pad(labels, pad, mode="constant", constant_values=0)
        return image, labels


def _dataset_probabilities(datasets: list[str], weights: Mapping[str, float] | None) -> np.ndarray:
    """Normalised dataset odds; a dataset missing from ``weights`` has weight 1."""
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(datasets))
    if unknown:
        raise ConfigError(f"dataset_weights.{unknown[0]}: no training case belongs to this dataset (have: {', '.join(datasets)})")
    values = np.array([float(weights.get(d, 1.0)) for d in datasets])
    for name, value in zip(datasets, values):
        if not (value >= 0.0 and math.isfinite(value)):
            raise ConfigError(f"dataset_weights.{name}: expected a finite weight >= 0, got {value}")
    if values.sum() <= 0:
        raise ConfigError("dataset_weights: at least one dataset needs a weight above 0")
    return values / values.sum()


def _foreground_locations(case: Any) -> list[np.ndarray]:
    """Per annotated class present in the case, its sampled voxel coordinates [K, 3]."""
    stored = (getattr(case, "meta", None) or {}).get("class_locations", {})
    found = []
    for class_id in sorted(int(c) for c in case.annotated):
        points = stored.get(str(class_id)) or []
        if len(points):
            found.append(np.asarray(points, dtype=np.int64).reshape(-1, 3))
    return found


def make_train_loader(
    cases: Sequence[Any],
    num_classes: int,
    patch_size: Sequence[int],
    batch_size: int,
    iterations: int,
    *,
    foreground_fraction: float = 0.33,
    dataset_weights: Mapping[str, float] | None = None,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> DataLoader:
    """A loader giving exactly ``iterations`` batches (one epoch on this rank).

    Batches are dicts: ``image`` [B, 1, X, Y, Z] float32, ``labels`` [B, X, Y, Z] int64,
    ``annotated`` [B, N] bool. Samples pick their dataset independently, so batches mix
    datasets. The batches do not depend on ``num_workers``. Call
    ``loader.dataset.set_epoch(e)`` before iterating again for the next epoch.
    """
    if batch_size < 1 or iterations < 0:
        raise ConfigError(f"train.batch_size ({batch_size}) must be >= 1 and iterations ({iterations}) >= 0")
    sampler = PatchSampler(
        cases,
        num_classes,
        patch_size,
        foreground_fraction=foreground_fraction,
        dataset_weights=dataset_weights,
        augment=augment,
        seed=seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        samples_per_epoch=iterations * batch_size,
        block_size=batch_size,
    )
    return DataLoader(sampler, batch_size=batch_size, num_workers=num_workers, drop_last=False)
