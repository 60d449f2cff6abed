"""The one training loop, shared by every method.

    trainer = Trainer(config, "runs/x")        # builds the method, optimiser, loaders
    summary = trainer.fit()                     # epochs × iterations, validation, checkpoints

Nothing here is method-specific: a method turns a batch into ``LossOutput(total, parts)``
and every part is logged as ``loss_<name>``. Single process on CPU or one GPU, or
DistributedDataParallel when launched by ``torchrun`` (see :mod:`tctseg.training.distributed`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import tctseg
from tctseg.errors import CheckpointError, ConfigError, TrainingError
from tctseg.files.layout import RunLayout
from tctseg.settings import OPTIMIZERS, SCHEDULES
from tctseg.methods import build_method
from tctseg.training import distributed as dist_utils
from tctseg.checkpoint import (
    check_compatible,
    load_checkpoint,
    load_weights,
    preprocessing_settings,
    save_checkpoint,
)
from tctseg.training.logging import TrainingLogger, loss_part_columns
from tctseg.training.run_folder import load_cases, open_run_folder
from tctseg.training.seeding import capture_rng_state, rank_seed, restore_rng_state, seed_everything

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from tctseg.config import Config
    from tctseg.preprocessing.cache import PreparedCase

log = logging.getLogger("tctseg.training")


def learning_rate(schedule: str, base_lr: float, epoch: int, epochs: int) -> float:
    """Learning rate of 0-based ``epoch``: ``constant``, ``poly`` (nnU-Net's (1 − e/E)^0.9) or ``cosine``."""
    progress = min(max(epoch / epochs, 0.0), 1.0)
    if schedule == "constant":
        return base_lr
    if schedule == "poly":
        return base_lr * (1.0 - progress) ** 0.9
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ConfigError(f"train.schedule: {schedule!r} is not one of {', '.join(SCHEDULES)}")


def build_optimizer(params, config: Config) -> torch.optim.Optimizer:
    """The optimiser named by ``train.optimizer`` (adam | adamw | sgd with Nesterov momentum 0.99)."""
    t = config.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, weight_decay=t.weight_decay, momentum=0.99, nesterov=True)
    raise ConfigError(f"train.optimizer: {t.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype: on CUDA bf16 where supported (``auto``) else fp16; None on CPU or ``off``."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def check_resumable(checkpoint: dict[str, Any], config: Config, path: Path) -> None:
    """Refuse (ConfigError, one line with the old and the new value) resuming the run of
    ``checkpoint`` under a config that changes its optimizer or weight decay, or asks for fewer
    epochs than it has completed.

    The optimizer's saved state belongs to the optimizer that wrote it (Adam's moments loaded
    into SGD end in ``KeyError: 'momentum'``), and the saved param groups would silently keep
    the old weight decay; fewer epochs would rewrite the run's config.yaml to a schedule the run
    has already passed. A resumed run keeps these settings: the hint says how to start again.
    """
    trained = checkpoint["config"].get("train")
    trained = trained if isinstance(trained, dict) else {}
    t = config.train
    again = "start a new run (another --output, or --overwrite)"
    old_optimizer = trained.get("optimizer")
    if old_optimizer is not None and old_optimizer != t.optimizer:
        raise ConfigError(
            f"train.optimizer: {t.optimizer!r}, but the run in {path.parent} was trained with {old_optimizer!r} "
            f"({path.name} holds its {old_optimizer} state); a resumed run keeps its optimizer: resume with "
            f"train.optimizer={old_optimizer}, or {again}"
        )
    old_decay = trained.get("weight_decay")
    if old_decay is not None and not (isinstance(old_decay, (int, float)) and float(old_decay) == float(t.weight_decay)):
        raise ConfigError(
            f"train.weight_decay: {t.weight_decay!r}, but the run in {path.parent} was trained with {old_decay!r}; "
            f"a resumed run keeps its weight decay (its optimizer state holds it): resume with "
            f"train.weight_decay={old_decay}, or {again}"
        )
    if old_optimizer is None:  # a config without the setting: the saved param groups must fit the optimizer
        needed = {"sgd": ("momentum", "nesterov"), "adam": ("betas", "eps"), "adamw": ("betas", "eps")}.get(t.optimizer, ())
        groups = checkpoint.get("optimizer", {}).get("param_groups") or [{}]
        lacking = [k for k in needed if any(k not in g for g in groups)]
        if lacking:
            raise ConfigError(
                f"train.optimizer: {t.optimizer!r}, but the optimizer state in {path} has no {lacking[0]!r} "
                f"(another optimizer wrote it); a resumed run keeps its optimizer: {again}"
            )
    done = int(checkpoint["epoch"])
    if t.epochs < done:
        raise ConfigError(
            f"train.epochs: {t.epochs}, but the run in {path.parent} has completed {done} epochs "
            f"({path.name}); resume with train.epochs >= {done}, or {again}"
        )


def check_resume(config: Config, output_dir: Path) -> None:
    """:func:`check_resumable` for every last checkpoint of the run in ``output_dir`` (a staged
    run's: each stage's), before a resumed ``train`` or ``run`` prepares the cache or writes
    anything. A folder without a checkpoint passes (its training starts at epoch 0)."""
    for run in _run_files(output_dir)[0]:
        if run.checkpoint_last.is_file():
            check_resumable(load_checkpoint(run.checkpoint_last), config, run.checkpoint_last)


def _run_files(output_dir: Path) -> tuple[list[RunLayout], list[Path], list[Path]]:
    """(run folders, files and TensorBoard folders, stage folders) a training in ``output_dir`` writes."""
    layout = RunLayout(output_dir)
    stage1 = sorted(p for p in layout.stage1.iterdir() if p.is_dir()) if layout.stage1.is_dir() else []
    runs = [layout, layout.stage3, *(RunLayout(p) for p in stage1)]
    files = [path for run in runs for path in (run.config_yaml, run.log_csv, run.progress_png, run.tensorboard)]
    folders = [*(run.root for run in runs[2:]), layout.stage1, layout.stage2, layout.stage3.root]
    return runs, [*files, layout.pipeline_json], folders


def existing_run_files(output_dir: Path) -> set[Path]:
    """The paths :func:`discard_unstarted_run` could remove that exist now (to be kept)."""
    runs, files, folders = _run_files(output_dir)
    inside = [p for run in runs if run.tensorboard.is_dir() and not run.tensorboard.is_symlink()
              for p in run.tensorboard.rglob("*")]
    return {p for p in [*files, *folders, *inside] if p.exists() or p.is_symlink()}


def discard_unstarted_run(output_dir: Path, keep: Collection[Path] = ()) -> bool:
    """After a training that failed (an error, Ctrl-C) before any of its networks wrote a
    checkpoint: remove what it wrote — ``config.yaml``, ``tensorboard/``, ``log.csv``,
    ``progress.png`` of the run folder and of a staged run's stage folders, ``pipeline.json``, and
    stage folders left empty — so that the folder does not hold "another run" that only
    ``--resume`` or ``--overwrite`` would accept. Nothing is removed when a checkpoint exists (the
    run can be resumed); ``keep`` (:func:`existing_run_files` before the training) and every
    other file are never touched. Returns whether anything was removed."""
    runs, files, folders = _run_files(output_dir)
    if any(run.checkpoint_last.exists() or run.checkpoint_best.exists() for run in runs):
        return False
    keep = set(keep)
    removed = False
    for path in files:
        with contextlib.suppress(OSError):
            if path in keep:
                if path.is_dir() and not path.is_symlink():  # a TensorBoard folder that was there: only new events go
                    for new in sorted((p for p in path.rglob("*") if p not in keep), reverse=True):  # deepest first
                        if new.is_dir() and not new.is_symlink():
                            new.rmdir()
                        else:
                            new.unlink()
                        removed = True
            elif path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
                removed = True
            elif path.exists() or path.is_symlink():
                path.unlink()
                removed = True
    for folder in (f for f in folders if f not in keep):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    return removed


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _plain_tensor(t: torch.Tensor) -> torch.Tensor:
    # MONAI MetaTensors slow every op down (~23% per step): train on plain tensors
    return t.as_tensor() if hasattr(t, "as_tensor") else t


class Trainer:
    """Trains ``build_method(config)`` and writes a run folder.

    ``output_dir`` receives ``config.yaml``, ``checkpoint_last.pt`` (every epoch),
    ``checkpoint_best.pt`` (best mean validation DSC), ``log.csv``, ``tensorboard/`` and
    ``progress.png`` — all from rank 0 only. ``resume`` continues from ``checkpoint_last.pt``
    (a fresh start when there is none); ``overwrite`` deletes a previous run's outputs.
    The names come from :class:`tctseg.files.layout.RunLayout` (``self.layout``); the folder is
    opened by :func:`tctseg.training.run_folder.open_run_folder`, as PFL's pipeline opens its own.
    ``train_cases`` / ``val_cases``: prepared cases; default ``load_prepared(config, role)``
    for roles ``train`` / ``validation``. ``device``: ``cpu``, ``cuda`` or None (CUDA if present).
    ``init_checkpoint``: a fresh run starts from this checkpoint's weights (fine-tuning); a
    resumed run keeps its own.
    """

    def __init__(
        self,
        config: Config,
        output_dir: str | Path,
        resume: bool = False,
        overwrite: bool = False,
        device: str | torch.device | None = None,
        train_cases: Sequence[PreparedCase] | None = None,
        val_cases: Sequence[PreparedCase] | None = None,
        progress: bool = True,
        init_checkpoint: str | Path | None = None,
    ):
        self.config = config
        self.progress = progress
        run = open_run_folder(output_dir, resume=resume, overwrite=overwrite, device=device)
        self.output_dir, self.layout, self.context = run.layout.root, run.layout, run.context
        explicit = torch.device(device) if device is not None else None
        # an explicit index (cuda:1) wins; otherwise torchrun's LOCAL_RANK picks the GPU
        self.device = explicit if explicit is not None and explicit.index is not None else dist_utils.device_for(self.context, run.device_type)

        checkpoint_path = self.layout.checkpoint_last
        checkpoint = None
        if resume and checkpoint_path.exists():
            checkpoint = load_checkpoint(checkpoint_path)
            check_compatible(checkpoint, config, checkpoint_path)
            if checkpoint.get("method") != config.method.name:
                raise CheckpointError(
                    f"{checkpoint_path}: holds a {checkpoint.get('method')!r} run, "
                    f"but method.name is {config.method.name!r}"
                )
            check_resumable(checkpoint, config, checkpoint_path)  # before config.yaml is rewritten
        elif resume and self.context.is_main:
            log.warning("%s: no checkpoint to resume from; starting from epoch 0", checkpoint_path)

        seed_everything(config.train.seed, self.context.rank)
        self.train_cases = load_cases(config, "train", train_cases)
        if not self.train_cases:
            raise ConfigError("datasets: no prepared training cases (no dataset has role: train)")
        self.val_cases = load_cases(config, "validation", val_cases)

        self.method = build_method(config).to(self.device)
        if config.network.channels_last:
            self.method = self.method.to(memory_format=torch.channels_last_3d)
        # the method's learnable loss weights (e.g. UAUWL log-variances) train with the network
        self.optimizer = build_optimizer(self.method.parameters(), config)
        self.amp_dtype = autocast_dtype(config.train.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        self.start_epoch = 0
        self.best_metric: float | None = None
        self.history: list[dict[str, float]] = []
        self.nonfinite_in_a_row = 0
        self._buffer_backup: list[torch.Tensor] | None = None
        if checkpoint is not None:
            self._restore(checkpoint, checkpoint_path)
        elif init_checkpoint is not None:
            self._load_initial_weights(Path(init_checkpoint))

        self.model = dist_utils.wrap_model(self.method, self.context, self.device)
        self.logger = TrainingLogger(self.output_dir, resume_epoch=self.start_epoch) if self.context.is_main else None
        run.write_config(config)

    # ------------------------------------------------------------------ set-up helpers

    def _load_initial_weights(self, path: Path) -> None:
        initial = load_checkpoint(path)
        load_weights(self.method, initial["model"], path, self.config, initial["config"])

    def _restore(self, checkpoint: dict[str, Any], path: Path) -> None:
        # the weights first: a changed network setting is named with its old and new value
        load_weights(self.method, checkpoint["model"], path, self.config, checkpoint["config"])
        try:
            if "optimizer" not in checkpoint:
                raise KeyError("optimizer")
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if checkpoint.get("scaler"):
                self.scaler.load_state_dict(checkpoint["scaler"])
            if "rng" not in checkpoint:
                raise KeyError("rng")
            if self.context.rank == 0:
                restore_rng_state(checkpoint["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            raise CheckpointError(f"{path}: cannot resume from it ({type(e).__name__}: {_first_line(e)})") from None
        self.start_epoch = int(checkpoint["epoch"])
        self.best_metric = checkpoint.get("best_metric")
        self.history = list(checkpoint.get("history") or [])
        if self.context.rank != 0:
            # only rank 0's RNG state is stored; other ranks continue from a derived seed
            seed_everything(rank_seed(self.config.train.seed + self.start_epoch, self.context.rank))

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        """Train from the next epoch to ``train.epochs``.

        Returns ``{"epochs_completed", "best_metric", "last_checkpoint", "best_checkpoint"}``.
        """
        t = self.config.train
        try:
            for epoch in range(self.start_epoch, t.epochs):
                row = self.train_epoch(epoch)
                completed = epoch + 1
                validated = completed % t.val_every == 0 or completed == t.epochs
                improved = False
                if validated and self.val_cases:
                    if self.context.is_main:
                        row.update(self.validate())
                        mean = row.get("val_dice_mean")
                        if mean is not None and (self.best_metric is None or mean > self.best_metric):
                            self.best_metric = mean
                            improved = True
                    dist_utils.barrier(self.context)  # the other ranks wait for validation
                self.history.append(row)
                if self.context.is_main:
                    self._save(completed, improved)
                    self.logger.log_epoch(row)
                    if validated:  # the last epoch always is
                        self.logger.plot_progress()
                    self._print_epoch(row)
                self.start_epoch = completed
            dist_utils.barrier(self.context)
        finally:
            if self.logger is not None:
                self.logger.close()
        return {
            "epochs_completed": self.start_epoch,
            "best_metric": self.best_metric,
            "last_checkpoint": self.layout.checkpoint_last,
            "best_checkpoint": self.layout.checkpoint_best if self.best_metric is not None else None,
        }

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of ``train.iterations_per_epoch`` steps; returns its log row (0-based ``epoch``)."""
        from tqdm import tqdm

        t = self.config.train
        lr = learning_rate(t.schedule, t.lr, epoch, t.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loader = self._loader(epoch)
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        start = time.perf_counter()
        bar = tqdm(
            loader,
            total=t.iterations_per_epoch,
            desc=f"epoch {epoch + 1}/{t.epochs}",
            disable=not (self.progress and self.context.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        for batch in bar:
            parts = self._step(self._to_device(batch), epoch)
            if parts is None:
                continue
            steps += 1
            for key, value in parts.items():
                sums[key] = sums[key] + value if key in sums else value
        bar.close()
        dist_utils.broadcast_buffers(self.model, self.context)
        row: dict[str, float] = {"epoch": float(epoch + 1)}
        if sums:
            keys = list(sums)
            # one host transfer per epoch: the means of every part, averaged over ranks
            means = dist_utils.all_reduce_mean(torch.stack([sums[k] for k in keys]) / steps, self.context)
            row.update(loss_part_columns(dict(zip(keys, means.cpu().tolist()))))
        row["lr"] = lr
        row["epoch_time_s"] = time.perf_counter() - start
        return row

    def _loader(self, epoch: int):
        from tctseg.data.sampler import make_train_loader

        t = self.config.train
        augment = None
        if t.augment:
            from tctseg.data.augment import AUGMENT_PRESETS

            augment = AUGMENT_PRESETS[t.augment_preset]
        return make_train_loader(
            self.train_cases,
            self.config.num_classes,
            tuple(t.patch_size),
            t.batch_size,
            t.iterations_per_epoch,
            foreground_fraction=t.foreground_fraction,
            dataset_weights=self._dataset_weights(),
            augment=augment,
            seed=t.seed,
            epoch=epoch,
            rank=self.context.rank,
            world_size=self.context.world_size,
            num_workers=t.num_workers,
        )

    def _dataset_weights(self) -> dict[str, float]:
        """``sampling_weight`` of every dataset that has training cases."""
        present = {case.dataset for case in self.train_cases}
        return {d.name: d.sampling_weight for d in self.config.datasets if d.name in present}

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        out = {k: _plain_tensor(v).to(self.device, non_blocking=non_blocking) for k, v in batch.items()}
        if self.config.network.channels_last:
            out["image"] = out["image"].contiguous(memory_format=torch.channels_last_3d)
        return out

    def _step(self, batch: dict[str, torch.Tensor], epoch: int) -> dict[str, torch.Tensor] | None:
        """Forward, backward, optimiser step. Returns the detached loss parts, or None when skipped."""
        try:
            autocast = (
                torch.autocast(self.device.type, dtype=self.amp_dtype)
                if self.amp_dtype is not None
                else contextlib.nullcontext()
            )
            self._backup_buffers()
            with autocast:
                out = self.model(batch, epoch)
            total = out.total
            # every rank must take the same decision, or DDP's gradient all-reduce would hang
            finite = dist_utils.all_reduce_min(torch.isfinite(total.detach()).float().reshape(1), self.context)
            if not bool(finite.item()):
                self._restore_buffers()
                self._on_nonfinite(epoch)
                return None
            self.nonfinite_in_a_row = 0
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        except torch.cuda.OutOfMemoryError:
            t, n = self.config.train, self.config.network
            raise TrainingError(
                f"CUDA out of memory with train.patch_size={list(t.patch_size)}, "
                f"train.batch_size={t.batch_size}, network.width={n.width}: lower one of them "
                f"(e.g. --set train.batch_size={max(1, t.batch_size // 2)})"
            ) from None
        parts = {"total": total.detach().float()}
        parts.update({k: v.detach().float().to(self.device) for k, v in out.parts.items()})
        return parts

    def _backup_buffers(self) -> None:
        # BatchNorm statistics change in the forward pass: a skipped step must not keep them
        buffers = list(self.method.buffers())
        if getattr(self, "_buffer_backup", None) is None:
            self._buffer_backup = [b.detach().clone() for b in buffers]
        else:
            for saved, b in zip(self._buffer_backup, buffers):
                saved.copy_(b)

    def _restore_buffers(self) -> None:
        with torch.no_grad():
            for saved, b in zip(self._buffer_backup, self.method.buffers()):
                b.copy_(saved)

    def _on_nonfinite(self, epoch: int) -> None:
        self.nonfinite_in_a_row += 1
        limit = self.config.train.max_nonfinite_steps
        if self.context.is_main:
            log.warning(
                "epoch %d: non-finite loss, step skipped (%d in a row, stop at %d)",
                epoch + 1,
                self.nonfinite_in_a_row,
                limit,
            )
        if self.nonfinite_in_a_row >= limit:
            last = self.layout.checkpoint_last
            where = f"the last checkpoint {last} is usable" if last.exists() else "no checkpoint was written yet"
            raise TrainingError(
                f"training stopped in epoch {epoch + 1}: the loss was NaN or infinite in "
                f"{self.nonfinite_in_a_row} steps in a row (train.max_nonfinite_steps={limit}); "
                f"{where}. Try a lower train.lr or --set train.amp=off"
            )

    # ------------------------------------------------------------------ validation, saving

    def validate(self) -> dict[str, float]:
        """Mean DSC per class over the validation cases (each on the classes it annotates).

        Returns ``val_dice_<class>`` for every class some case annotates and ``val_dice_mean``
        (the mean over those classes); empty when no case has a label. For a method whose
        network has auxiliary task heads (TCT) also ``val_ath_dice_<class>`` and
        ``val_ath_dice_mean``: ATH j's own mask ``g^j > g^0`` against the label of class j,
        so that a reader sees whether the teachers are any good before they teach.
        """
        from tctseg.metrics.masks import dice
        from tctseg.inference.sliding_window import sliding_window_probabilities

        method = dist_utils.unwrap_model(self.model)
        with_aux = getattr(method.network, "aux_heads", None) is not None
        n = self.config.num_classes
        per_class: dict[int, list[float]] = {}
        per_class_ath: dict[int, list[float]] = {}
        inf = self.config.inference
        try:
            with torch.no_grad():
                for case in self.val_cases:
                    label = case.label
                    if label is None:
                        continue
                    probs = sliding_window_probabilities(
                        method,
                        np.array(case.image),  # a writable copy of the memory-mapped cache
                        tuple(self.config.train.patch_size),
                        overlap=inf.overlap,
                        sw_batch_size=inf.sw_batch_size,
                        tta_flip=False,
                        device=self.device,
                        channels_last=self.config.network.channels_last,
                        progress=False,
                        aux_heads=with_aux,
                    )
                    prediction = probs[: n + 1].argmax(0).numpy()
                    label = np.asarray(label)
                    for class_id in case.annotated:
                        per_class.setdefault(class_id, []).append(dice(prediction == class_id, label == class_id))
                        if with_aux:
                            # blended g^j > 0.5 is the blended g^j > g^0 (the two sum to 1)
                            ath_mask = (probs[n + class_id] > 0.5).numpy()
                            per_class_ath.setdefault(class_id, []).append(dice(ath_mask, label == class_id))
        finally:
            method.train()
        row = {f"val_dice_{self.config.classes[c - 1]}": float(np.mean(v)) for c, v in sorted(per_class.items())}
        if row:
            row["val_dice_mean"] = float(np.mean(list(row.values())))
        ath = {f"val_ath_dice_{self.config.classes[c - 1]}": float(np.mean(v)) for c, v in sorted(per_class_ath.items())}
        if ath:
            ath["val_ath_dice_mean"] = float(np.mean(list(ath.values())))
        return {**row, **ath}

    def checkpoint_state(self, completed_epochs: int) -> dict[str, Any]:
        """The dict a checkpoint holds after ``completed_epochs`` epochs."""
        t = self.config.train
        return {
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"schedule": t.schedule, "base_lr": t.lr, "epochs": t.epochs, "last_epoch": completed_epochs},
            "scaler": self.scaler.state_dict(),
            "epoch": completed_epochs,
            "rng": capture_rng_state(),
            "config": self.config.to_dict(),
            "classes": list(self.config.classes),
            "method": self.config.method.name,
            "preprocessing": preprocessing_settings(self.config),
            "tctseg_version": tctseg.__version__,
            "best_metric": self.best_metric,
            "history": [dict(r) for r in self.history],
        }

    def _save(self, completed_epochs: int, improved: bool) -> None:
        state = self.checkpoint_state(completed_epochs)
        save_checkpoint(state, self.layout.checkpoint_last)
        if improved:
            save_checkpoint(state, self.layout.checkpoint_best)

    def _print_epoch(self, row: dict[str, float]) -> None:
        shown = [f"epoch {int(row['epoch'])}/{self.config.train.epochs}"]
        for key in ("loss_total", "val_dice_mean", "lr", "epoch_time_s"):
            if key in row:
                shown.append(f"{key} {row[key]:.4g}")
        print("  ".join(shown), flush=True)

    def close(self) -> None:
        """Leave the process group (when distributed)."""
        dist_utils.cleanup_distributed()
