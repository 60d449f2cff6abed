"""Tiny in-memory cases, configs and nnU-Net-raw datasets for the training tests."""

from __future__ import annotations

import contextlib
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from tctseg.config import Config, config_from_dict

SHAPE = (24, 24, 12)
PATCH = [16, 16, 8]
CLASSES = ["liver", "spleen"]


@dataclass
class MemoryCase:
    """Stands in for preprocessing.cache.PreparedCase (same attributes)."""

    case_id: str
    dataset: str
    modality: str
    annotated: tuple[int, ...]
    image: np.ndarray
    label: np.ndarray | None
    meta: dict = field(default_factory=dict)


def phantom_volume(seed: int, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A bright ball (class 1) and a darker box (class 2) on noise: image float32, label uint8."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    cx, cy = rng.integers(7, 11, size=2)
    label = np.zeros(shape, np.uint8)
    label[(x - cx) ** 2 + (y - cy) ** 2 + ((z - 6) * 2) ** 2 <= 25] = 1
    label[15:21, 14:21, 3:9] = 2
    image = 0.1 * rng.standard_normal(shape).astype(np.float32)
    image[label == 1] += 1.0
    image[label == 2] += 0.5
    return image.astype(np.float32), label


def memory_cases() -> tuple[list[MemoryCase], list[MemoryCase]]:
    """Two partially labelled training cases (liver only; spleen only) and one validation case."""
    train = []
    for i, (dataset, class_id) in enumerate((("ds_liver", 1), ("ds_spleen", 2))):
        image, label = phantom_volume(i)
        train.append(MemoryCase(f"c{i}", dataset, "CT", (class_id,), image, np.where(label == class_id, label, 0).astype(np.uint8)))
    image, label = phantom_volume(7)
    val = [MemoryCase("v0", "ds_val", "CT", (1, 2), image, label)]
    return train, val


def tiny_config(method: str = "tct", **train) -> Config:
    settings = dict(
        epochs=2, iterations_per_epoch=2, batch_size=2, patch_size=PATCH, lr=1e-3, seed=3,
        val_every=1, num_workers=0, augment=False, foreground_fraction=0.5,
    )
    settings.update(train)
    return config_from_dict({
        "classes": CLASSES,
        "datasets": [
            {"name": "ds_liver", "format": "nnunet", "path": "unused", "label_map": {1: "liver"}},
            {"name": "ds_spleen", "format": "nnunet", "path": "unused", "label_map": {1: "spleen"}},
        ],
        "network": {"width": 4, "depth": 3, "norm": "batch"},
        "method": {"name": method},
        "train": settings,
    })


def _stand_in_loader(cases, num_classes, patch_size, batch_size, iterations, *, foreground_fraction,
                     dataset_weights, augment, seed, epoch, rank, world_size, num_workers):
    """Deterministic random crops for (seed, epoch, rank): the sampler's contract, nothing more."""
    rng = np.random.default_rng([seed, epoch, rank])
    batches = []
    for _ in range(iterations):
        images, labels, annotated = [], [], []
        for _ in range(batch_size):
            case = cases[rng.integers(len(cases))]
            corner = [rng.integers(0, s - p + 1) for s, p in zip(case.image.shape, patch_size)]
            window = tuple(slice(c, c + p) for c, p in zip(corner, patch_size))
            images.append(torch.from_numpy(np.array(case.image[window]))[None])
            labels.append(torch.from_numpy(np.array(case.label[window]).astype(np.int64)))
            annotated.append(torch.tensor([j + 1 in case.annotated for j in range(num_classes)]))
        batches.append({"image": torch.stack(images), "labels": torch.stack(labels), "annotated": torch.stack(annotated)})
    return batches


def use_sampler(monkeypatch) -> str:
    """The real sampler when it exists, else install the stand-in. Returns which one."""
    try:
        import tctseg.data.sampler  # noqa: F401

        return "real"
    except ImportError:
        module = types.ModuleType("tctseg.data.sampler")
        module.make_train_loader = _stand_in_loader
        monkeypatch.setitem(sys.modules, "tctseg.data.sampler", module)
        return "stand-in"


@contextlib.contextmanager
def interrupted_after_epochs(epochs: int):
    """Ctrl-C in the middle of epoch ``epochs + 1`` (after its first optimiser step; the epoch needs
    two or more iterations): a ``Trainer.fit`` in the block has written ``epochs`` epochs'
    checkpoints and raises KeyboardInterrupt, which the block expects. Resuming must then ignore
    the step the checkpoints never saw."""
    from tctseg.training import Trainer

    real_step = Trainer._step
    steps = []

    def step(self, batch, epoch):
        assert epoch <= epochs, f"epoch {epochs + 1} ended after one step: the interruption never came"
        if epoch == epochs:
            if steps:
                raise KeyboardInterrupt
            steps.append(epoch)
        return real_step(self, batch, epoch)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(Trainer, "_step", step)
        yield


def write_nnunet_dataset(root: Path, seeds=(0, 1, 2)) -> Path:
    """A tiny nnU-Net-raw dataset (liver = 1, spleen = 2) of 1 mm³ RAS volumes."""
    import nibabel as nib

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for seed in seeds:
        image, label = phantom_volume(seed)
        affine = np.eye(4)
        nib.save(nib.Nifti1Image((image * 400 - 100).astype(np.float32), affine), root / "imagesTr" / f"case_{seed:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{seed:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2},
        "numTraining": len(seeds), "file_ending": ".nii.gz",
    }))
    return root


def write_run_config(tmp_path: Path, **train) -> Path:
    """A YAML config over a tiny nnU-Net dataset in tmp_path (two training cases, one for validation)."""
    import yaml

    data = write_nnunet_dataset(tmp_path / "raw")
    settings = dict(
        epochs=3, iterations_per_epoch=4, batch_size=1, patch_size=PATCH, lr=1e-3, seed=5,
        val_every=10, num_workers=0, augment=False,
    )
    settings.update(train)
    config = {
        "classes": CLASSES,
        "cache_dir": str(tmp_path / "cache"),
        "output_dir": str(tmp_path / "runs"),
        "datasets": [
            {"name": "tiny_train", "format": "nnunet", "path": str(data), "role": "train",
             "label_map": {1: "liver", 2: "spleen"}, "cases": ["case_000", "case_001"]},
            {"name": "tiny_val", "format": "nnunet", "path": str(data), "role": "validation",
             "label_map": {1: "liver", 2: "spleen"}, "cases": ["case_002"]},
        ],
        "preprocessing": {"spacing": [1.0, 1.0, 1.0], "workers": 1},
        "network": {"width": 4, "depth": 3, "norm": "batch"},
        "method": {"name": "tct"},
        "train": settings,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
