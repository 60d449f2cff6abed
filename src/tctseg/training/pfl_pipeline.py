"""PFL's three stages as one resumable run (the loss and the merge rule: :mod:`tctseg.methods.pfl`).

    trainer = build_trainer(config, "runs/x/pfl")   # a PFLPipeline for method pfl, else a Trainer
    summary = trainer.fit()                          # Trainer.fit()'s summary, of the final network

(:func:`tctseg.training.build.build_trainer`; the run folder is opened as the Trainer opens
its own, :func:`tctseg.training.run_folder.open_run_folder`.)

1. one single-organ network per class that some training case leaves unannotated, trained
   on the cases that annotate it (``classes: [<class>]``, organ = 1), for
   ``method.options.stage1_epochs`` epochs (default the full schedule, ``train.epochs``);
2. every training case labelled offline by sliding window with the networks of the organs
   it does not annotate, merged with its ground truth (ground truth wins);
3. a fresh network on the merged labels (every case now complete), the full schedule, with
   the usual validation on the real validation labels.

Run folder::

    <run>/
      config.yaml                      the PFL config
      pipeline.json                    what is finished and where its checkpoint is
      stage1/<class>/                  one Trainer run folder per single-organ network
      stage2/<dataset>/<case_id>.npy   a case's pseudo-full labels, uint8 [X, Y, Z], prepared grid
      stage2/<dataset>/<case_id>.json  its record: annotated ids, voxels filled per class,
                                       seconds taken, class_locations (for the sampler)
      stage3/                          the final network's Trainer run folder: ``predict``
                                       uses its checkpoint_best.pt (else checkpoint_last.pt)

Resuming (``--resume``, and ``run``/``compare`` after a kill): a stage recorded finished in
``pipeline.json`` is reused as it is; an unfinished training continues from its
``checkpoint_last.pt``; stage 2 labels only the cases without a record. A case's ``.npy``
and then its ``.json`` are each written to a temporary file and renamed, so a kill leaves
a case whole or absent. Under ``torchrun`` every rank trains each stage (DDP) and rank 0
alone labels, the others waiting at a barrier.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tctseg.checkpoint import load_checkpoint
from tctseg.config import Config
from tctseg.errors import ConfigError, DataError
from tctseg.files.layout import RunLayout
from tctseg.files.outputs import write_atomically
from tctseg.files.run_records import read_pipeline_record
from tctseg.methods.pfl import pseudo_full_label, stage1_epochs
from tctseg.devices import resolve_device
from tctseg.training import distributed as dist_utils
from tctseg.training.run_folder import load_cases, open_run_folder
from tctseg.training.trainer import Trainer

# one organ's foreground probability over a whole prepared volume: [X, Y, Z] → [X, Y, Z]
OrganProbability = Callable[[np.ndarray], np.ndarray]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), "PFL's stage record")


# --------------------------------------------------------------------------- the cases each stage sees


@dataclass(frozen=True)
class OrganMask:
    """``[source == class_id]`` as uint8, computed per slice: a lazy view of a (memory-mapped) label."""

    source: Any
    class_id: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.source.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        return (np.asarray(self.source[index]) == self.class_id).astype(np.uint8)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        mask = (np.asarray(self.source) == self.class_id).astype(np.uint8)
        return mask if dtype is None else mask.astype(dtype)


@dataclass(frozen=True)
class SingleOrganCase:
    """A prepared case as stage 1 sees it for organ ``class_id``: classes ``[organ]``, organ = 1."""

    source: Any
    class_id: int

    case_id = property(lambda self: self.source.case_id)
    dataset = property(lambda self: self.source.dataset)
    modality = property(lambda self: self.source.modality)
    image = property(lambda self: self.source.image)
    annotated = property(lambda self: (1,))

    @property
    def meta(self) -> dict[str, Any]:
        locations = (getattr(self.source, "meta", None) or {}).get("class_locations", {})
        return {"class_locations": {"1": locations.get(str(self.class_id), [])}}

    @property
    def label(self) -> OrganMask | None:
        label = self.source.label
        return None if label is None else OrganMask(label, self.class_id)


@dataclass(frozen=True)
class PseudoFullCase:
    """A prepared case with its stage-2 labels (``label_path``, memory-mapped on access);
    ``labelling_seconds``: what labelling it took."""

    source: Any
    label_path: Path
    annotated: tuple[int, ...]
    meta: dict[str, Any]
    labelling_seconds: float

    case_id = property(lambda self: self.source.case_id)
    dataset = property(lambda self: self.source.dataset)
    modality = property(lambda self: self.source.modality)
    image = property(lambda self: self.source.image)

    @property
    def label(self) -> np.ndarray:
        return np.load(self.label_path, mmap_mode="r")


def single_organ_config(config: Config, class_name: str) -> Config:
    """Stage 1's config for one organ: ``classes: [class_name]``, ``train.epochs`` the
    ``method.options.stage1_epochs`` (:func:`tctseg.methods.pfl.stage1_epochs`); the datasets
    keep their names, roles and sampling weights but drop their label maps (the cases arrive
    already binary)."""
    datasets = [dataclasses.replace(d, label_map=None, classes=None) for d in config.datasets]
    train = dataclasses.replace(config.train, epochs=stage1_epochs(config))
    return dataclasses.replace(config, classes=[class_name], datasets=datasets, train=train)


# --------------------------------------------------------------------------- stage 2


def label_training_cases(
    cases: Sequence[Any],
    organ_probability: Mapping[int, OrganProbability],
    folder: Path,
    *,
    seed: int = 0,
    progress: bool = False,
) -> list[PseudoFullCase]:
    """Stage 2: every case's pseudo-full labels under ``folder/<dataset>/``, or reused if there.

    ``organ_probability``: class id → that organ's single-organ network over a whole volume.
    A case runs only the networks of the organs it does not annotate. Returns the cases as
    stage 3 sees them: annotated = its own classes and every class a network labels.
    """
    from tctseg.preprocessing.cache import class_locations

    out = []
    for case in cases:
        directory = folder / case.dataset
        label_path, record_path = directory / f"{case.case_id}.npy", directory / f"{case.case_id}.json"
        annotated = tuple(sorted({int(k) for k in case.annotated} | set(organ_probability)))
        record = None
        if record_path.exists() and label_path.exists():
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                record = None  # a damaged record: label the case again
        if record is None:
            label = case.label
            if label is None:
                raise DataError(f"case {case.dataset}/{case.case_id}: has no label volume to train on")
            start = time.perf_counter()
            image = np.array(case.image, dtype=np.float32)
            needed = [k for k in sorted(organ_probability) if k not in case.annotated]
            probabilities = {k: organ_probability[k](image) for k in needed}
            merged = pseudo_full_label(np.asarray(label), case.annotated, probabilities).astype(np.uint8)
            filled = (merged != np.asarray(label))
            directory.mkdir(parents=True, exist_ok=True)
            write_atomically(label_path, lambda tmp: np.save(tmp, merged), "a pseudo-full label")
            record = {
                "case_id": case.case_id,
                "dataset": case.dataset,
                "annotated_by_ground_truth": sorted(int(k) for k in case.annotated),
                "labelled_by_networks": needed,
                "filled_voxels": {str(k): int((merged[filled] == k).sum()) for k in needed},
                "seconds": time.perf_counter() - start,
                "class_locations": class_locations(merged, seed=seed),
            }
            _write_json(record_path, record)
            if progress:
                print(f"  labelled {case.dataset}/{case.case_id}: filled "
                      + (", ".join(f"class {k} {n} voxels" for k, n in record["filled_voxels"].items()) or "nothing"),
                      flush=True)
        out.append(PseudoFullCase(case, label_path, annotated, {"class_locations": record["class_locations"]},
                                  float(record["seconds"])))
    return out


def organ_probability_from_checkpoint(checkpoint: Path, device: torch.device, channels_last: bool) -> OrganProbability:
    """A stage-1 network (loaded on first use) as an :data:`OrganProbability`: softmax channel 1
    blended over sliding windows of the training patch size, the config's overlap, no flips."""
    from tctseg.inference.sliding_window import sliding_window_probabilities
    from tctseg.checkpoint import load_method_from_checkpoint

    loaded: list[tuple[Any, Config]] = []

    def probability(image: np.ndarray) -> np.ndarray:
        if not loaded:
            loaded.append(load_method_from_checkpoint(checkpoint, device=device))
        method, config = loaded[0]
        probs = sliding_window_probabilities(
            method, image, tuple(config.train.patch_size), overlap=config.inference.overlap,
            sw_batch_size=config.inference.sw_batch_size, tta_flip=False, device=device,
            channels_last=channels_last, progress=False,
        )
        return probs[1].numpy()

    return probability


# --------------------------------------------------------------------------- the pipeline


class PFLPipeline:
    """Runs (or reuses) PFL's three stages in ``output_dir``; the arguments are Trainer's.

    ``init_checkpoint`` starts the final network (stage 3) from these weights. After
    :meth:`fit`, ``method`` is the final network's method.
    """

    def __init__(
        self,
        config: Config,
        output_dir: str | Path,
        resume: bool = False,
        overwrite: bool = False,
        device: str | torch.device | None = None,
        train_cases: Sequence[Any] | None = None,
        val_cases: Sequence[Any] | None = None,
        progress: bool = True,
        init_checkpoint: str | Path | None = None,
    ):
        self.config = config
        self.device = device
        self.progress = progress
        self.init_checkpoint = init_checkpoint
        self.method = None
        run = open_run_folder(output_dir, resume=resume, overwrite=overwrite, device=device, staged=True)
        self.output_dir, self.layout, self.context = run.layout.root, run.layout, run.context
        self.train_cases = load_cases(config, "train", train_cases)
        self.val_cases = load_cases(config, "validation", val_cases)
        self.record = (read_pipeline_record(self.output_dir) if resume else None) or {}
        self.record.update(method=config.method.name, epochs=config.train.epochs)
        self.record.setdefault("stage1", {})
        run.write_config(config)
        self._save_record()

    @cached_property
    def organs(self) -> list[int]:
        """Class ids that get a single-organ network: some training case annotates the class
        (so it can be learnt) and some does not (so its pseudo labels are used)."""
        annotated = [set(int(k) for k in case.annotated) for case in self.train_cases]
        return [k for k in range(1, self.config.num_classes + 1)
                if any(k in a for a in annotated) and not all(k in a for a in annotated)]

    def fit(self) -> dict[str, Any]:
        """Stages 1–3; returns the final network's Trainer summary."""
        return self.stage3(self.stage2(self.stage1()))

    def stage1(self) -> dict[int, Path]:
        """Train (or reuse) each single-organ network; class id → the checkpoint that labels."""
        checkpoints = {}
        for class_id in self.organs:
            name = self.config.classes[class_id - 1]
            done = self.record["stage1"].get(name, {})
            if done.get("finished"):
                checkpoints[class_id] = self.output_dir / done["checkpoint"]
                self._say(f"PFL stage 1: the {name} network finished before, reused")
                continue
            train = [SingleOrganCase(c, class_id) for c in self.train_cases if class_id in c.annotated]
            val = [SingleOrganCase(c, class_id) for c in self.val_cases if class_id in c.annotated and c.label is not None]
            config = single_organ_config(self.config, name)
            folder = self.layout.stage1_network(name).root
            self._check_stage1_resumable(name, folder, config.train.epochs)
            self._say(f"PFL stage 1: the {name} network on {len(train)} training case(s), "
                      f"{config.train.epochs} epoch(s) ...")
            summary = self._train(config, folder, train, val).fit()
            checkpoint = self._chosen_checkpoint(summary)
            checkpoints[class_id] = checkpoint
            self.record["stage1"][name] = {
                "class_id": class_id, "training_cases": len(train), "epochs": config.train.epochs, "finished": True,
                "checkpoint": str(checkpoint.relative_to(self.output_dir)),
            }
            self._save_record()
        return checkpoints

    def stage2(self, checkpoints: Mapping[int, Path]) -> list[PseudoFullCase]:
        """Label every training case (rank 0; the others wait), or reuse the labels there."""
        folder = self.layout.stage2
        device = torch.device(self.device) if self.device is not None else dist_utils.device_for(
            self.context, resolve_device(None))
        networks = {k: organ_probability_from_checkpoint(path, device, self.config.network.channels_last)
                    for k, path in checkpoints.items()}
        seed = self.config.train.seed
        if self.context.is_main:
            if not self.record.get("stage2", {}).get("finished"):
                self._say(f"PFL stage 2: labelling {len(self.train_cases)} training case(s) with "
                          f"{len(networks)} single-organ network(s) ...")
            cases = label_training_cases(self.train_cases, networks, folder, seed=seed, progress=self.progress)
            self.record["stage2"] = {
                "finished": True, "cases": len(cases),
                "seconds": sum(c.labelling_seconds for c in cases),  # labelling time, summed over resumes
            }
            self._save_record()
        dist_utils.barrier(self.context)
        if not self.context.is_main:
            cases = label_training_cases(self.train_cases, networks, folder, seed=seed)
        return cases

    def stage3(self, cases: Sequence[PseudoFullCase]) -> dict[str, Any]:
        """Train (or continue) the fresh final network on the pseudo-full labels."""
        if self.record.get("stage3", {}).get("finished"):
            self._say("PFL stage 3: the final network finished before, reused")
        else:
            self._say(f"PFL stage 3: a fresh network on {len(cases)} pseudo-fully labelled case(s) ...")
        trainer = self._train(self.config, self.layout.stage3.root, cases, self.val_cases,
                              init_checkpoint=self.init_checkpoint)
        summary = trainer.fit()
        self.method = trainer.method
        if summary["epochs_completed"] >= self.config.train.epochs:
            self.record["stage3"] = {"finished": True,
                                     "checkpoint": str(self._chosen_checkpoint(summary).relative_to(self.output_dir))}
            self._save_record()
        return summary

    @staticmethod
    def _check_stage1_resumable(name: str, folder: Path, epochs: int) -> None:
        """An unfinished single-organ network that has done more epochs than
        ``method.options.stage1_epochs`` now asks: one line naming the option (the Trainer
        would name ``train.epochs``, which the user did not change)."""
        last = RunLayout(folder).checkpoint_last
        if not last.is_file():
            return
        done = int(load_checkpoint(last)["epoch"])
        if done > epochs:
            raise ConfigError(
                f"method.options.stage1_epochs: {epochs}, but PFL's {name} network in {folder} has completed "
                f"{done} epochs; resume with stage1_epochs >= {done}, or start a new run (another --output, or --overwrite)"
            )

    def _train(self, config: Config, folder: Path, train: Sequence[Any], val: Sequence[Any], **kwargs: Any) -> Trainer:
        started = any(marker.exists() for marker in RunLayout(folder).markers)
        return Trainer(config, folder, resume=started, device=self.device, train_cases=train, val_cases=val,
                       progress=self.progress, **kwargs)

    @staticmethod
    def _chosen_checkpoint(summary: dict[str, Any]) -> Path:
        # as run/compare choose: the best validation checkpoint when there is one, else the last
        best = summary.get("best_checkpoint")
        return Path(best) if best is not None and Path(best).exists() else Path(summary["last_checkpoint"])

    def _save_record(self) -> None:
        if self.context.is_main:
            _write_json(self.layout.pipeline_json, self.record)

    def _say(self, text: str) -> None:
        if self.context.is_main:
            print(text, flush=True)

    def close(self) -> None:
        """Leave the process group (when distributed)."""
        dist_utils.cleanup_distributed()


__all__ = [
    "PFLPipeline",
    "label_training_cases",
]
