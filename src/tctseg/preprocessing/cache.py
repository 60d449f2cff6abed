"""The prepared cache: every case preprocessed once, on disk, keyed by the preprocessing settings.

Layout (docs/DESIGN.md "Prepared cache")::

    <cache_dir>/<fingerprint>/<dataset>/<case_id>/image.npy   float32 [X, Y, Z], RAS, resampled, in [0, 1]
                                                 /label.npy   uint8 [X, Y, Z] global ids (labelled cases only)
                                                 /meta.json

``fingerprint`` is a short hash of the preprocessing settings, so a changed setting prepares
into a new folder. A case is written into ``<case_id>.partial-<pid>/`` and renamed into place
when complete; only complete folders are read; partial folders left by a killed run are
removed and the case redone. A case whose source files (size, mtime) or label mapping changed
is prepared again. A scan that intensity scaling turns into one value or NaN is a per-case
error naming it (:func:`tctseg.preprocessing.scan.check_normalised`).
Each scan is prepared by :func:`tctseg.preprocessing.scan.prepare_scan`, the function predict uses. Do not run two ``prepare`` on one cache at the same time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tqdm import tqdm

import tctseg
from tctseg.config import Config, DatasetConfig, PreprocessingConfig
from tctseg.data.conversion import SourceCase, find_cases
from tctseg.data.conversion.common import select_cases
from tctseg.errors import ConfigError, DataError, OutputError, TctsegError
from tctseg.files.locking import folder_lock
from tctseg.files.outputs import ensure_writable
from tctseg.preprocessing.geometry import to_prepared
from tctseg.preprocessing.scan import prepare_scan, prepared_settings

CACHE_FORMAT = 1  # bump when the stored arrays' meaning changes
MAX_CLASS_LOCATIONS = 2000
_PARTIAL = ".partial-"
_STALE = ".stale-"


def settings_of(pre: PreprocessingConfig) -> dict[str, Any]:
    """The settings that decide the prepared arrays (:func:`~tctseg.preprocessing.scan.prepared_settings`,
    the record every checkpoint stores too) and the cache's own format version."""
    return {**prepared_settings(pre), "cache_format": CACHE_FORMAT}


def fingerprint(pre: PreprocessingConfig) -> str:
    text = json.dumps(settings_of(pre), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def cache_root(config: Config) -> Path:
    return Path(config.cache_dir) / fingerprint(config.preprocessing)


@dataclass
class PreparedCase:
    """One complete case folder of the cache; ``image``/``label`` are memory-mapped on access.

    ``annotated``: global ids (1..N) this case annotates.
    """

    case_id: str
    dataset: str
    modality: str
    annotated: tuple[int, ...]
    meta: dict = field(repr=False)
    folder: Path = field(repr=False)

    @property
    def image(self) -> np.ndarray:
        """float32 [X, Y, Z], RAS, normalised to [0, 1]."""
        return np.load(self.folder / "image.npy", mmap_mode="r")

    @property
    def label(self) -> np.ndarray | None:
        """uint8 [X, Y, Z] global ids, or None for an unlabelled case."""
        path = self.folder / "label.npy"
        return np.load(path, mmap_mode="r") if path.exists() else None


# --------------------------------------------------------------------------- prepare


def prepare(
    config: Config,
    roles: Iterable[str] = ("train", "validation", "test"),
    datasets: Iterable[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    wait_for_lock: bool = False,
) -> list[PreparedCase]:
    """Prepare every case of the selected datasets that is not already up to date in the cache.

    Cases run in parallel (``workers`` processes; default ``preprocessing.workers``). Failing
    cases are all reported in one DataError (by file) after the rest is prepared and kept.
    One process prepares a cache folder at a time: another one there is an OutputError
    naming its pid, or with ``wait_for_lock`` (a training preparing its own cache) is waited
    for. Returns the prepared cases, in config order.
    """
    selected = _select_datasets(config, roles, datasets)
    root = cache_root(config)
    check_apart_from_raw_data(config, selected)  # before anything is created or deleted there
    ensure_writable(root, "the prepared cache")
    with folder_lock(root, "prepared cache", wait=wait_for_lock):  # one prepare per cache folder at a time
        return _prepare_locked(config, selected, root, workers, progress)


def _prepare_locked(
    config: Config, selected: list[DatasetConfig], root: Path, workers: int | None, progress: bool
) -> list[PreparedCase]:
    settings = settings_of(config.preprocessing)
    todo: list[tuple[SourceCase, Path]] = []
    order: list[tuple[DatasetConfig, Path]] = []
    for dataset in selected:
        cases = find_cases(dataset, config.classes)
        dataset_dir = root / dataset.name
        try:
            dataset_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{dataset_dir}: cannot create the cache folder ({e.strerror or e})") from None
        _remove_stale(dataset_dir)
        for case in cases:
            case_dir = dataset_dir / case.case_id
            order.append((dataset, case_dir))
            if not _up_to_date(case_dir, case, settings, config.classes):
                todo.append((case, case_dir))
    failures = _run(todo, settings, config.classes, workers or config.preprocessing.workers, progress)
    if failures:
        lines = "\n".join(f"  {msg}" for msg in failures)
        raise DataError(
            f"{len(failures)} of {len(order)} cases could not be prepared "
            f"(the others are in {root}):\n{lines}"
        )
    return [_read_case(case_dir, dataset, config.classes) for dataset, case_dir in order]


def check_apart_from_raw_data(config: Config, selected: Iterable[DatasetConfig]) -> None:
    """Refuse (OutputError) a dataset's cache folder that is, holds or lies inside a configured
    dataset's raw ``path``: preparing replaces case folders there, so the raw scans would go."""
    raw = [(d, Path(d.path).expanduser().resolve()) for d in config.datasets]
    for dataset in selected:
        cache = (cache_root(config) / dataset.name).resolve()
        for source, path in raw:
            if cache == path:
                where = "is"
            elif path in cache.parents:
                where = "lies inside"
            elif cache in path.parents:
                where = "holds"
            else:
                continue
            raise OutputError(
                f"{cache}: the cache folder of dataset {dataset.name!r} {where} the raw data folder of dataset "
                f"{source.name!r} ({source.path}); preparing would replace the scans there, choose another cache_dir"
            )


def _select_datasets(config: Config, roles: Iterable[str], names: Iterable[str] | None) -> list[DatasetConfig]:
    roles = tuple(roles)
    known = [d.name for d in config.datasets]
    if names is not None:
        names = list(names)
        for n in names:
            if n not in known:
                raise ConfigError(f"--datasets: unknown dataset {n!r}; known: {', '.join(known)}")
    return [d for d in config.datasets if d.role in roles and (names is None or d.name in names)]


def _remove_stale(dataset_dir: Path) -> None:
    for p in dataset_dir.iterdir():
        if _PARTIAL in p.name or _STALE in p.name:
            shutil.rmtree(p, ignore_errors=True)


def source_records(case: SourceCase) -> list[dict[str, Any]]:
    records = []
    for f in case.source_files():
        stat = f.stat()
        records.append({"path": str(f.resolve()), "size": stat.st_size, "mtime": stat.st_mtime})
    return records


def _label_map(case: SourceCase, classes: list[str]) -> dict[str, Any]:
    return {**case.label_map_record(), "classes": list(classes)}


def _up_to_date(case_dir: Path, case: SourceCase, settings: dict, classes: list[str]) -> bool:
    meta_path = case_dir / "meta.json"
    if not meta_path.exists():
        return False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return (
            meta.get("settings") == settings
            and meta.get("label_map") == _label_map(case, classes)
            and meta.get("modality") == case.modality
            and meta.get("source_files") == source_records(case)
        )
    except (OSError, json.JSONDecodeError):
        return False  # an unreadable meta.json: prepare the case again


def _run(todo: list[tuple[SourceCase, Path]], settings: dict, classes: list[str], workers: int, progress: bool) -> list[str]:
    failures: list[str] = []
    bar = tqdm(total=len(todo), desc="prepare", unit="case", disable=not progress or not todo)
    if workers <= 1 or len(todo) <= 1:
        for case, case_dir in todo:
            error = _prepare_one(case, case_dir, settings, classes)
            if error:
                failures.append(error)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), initializer=_worker_init) as pool:
            futures = [pool.submit(_prepare_one, case, case_dir, settings, classes) for case, case_dir in todo]
            for future in as_completed(futures):
                error = future.result()
                if error:
                    failures.append(error)
                bar.update()
    bar.close()
    return sorted(failures)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # the processes are the parallelism


def _prepare_one(case: SourceCase, case_dir: Path, settings: dict, classes: list[str]) -> str | None:
    """Prepare one case into ``case_dir``; returns an error message instead of raising."""
    try:
        prepare_case(case, case_dir, settings, classes)
        return None
    except OutputError:
        raise  # an unwritable or full cache stops the run: every case would fail the same way
    except TctsegError as e:
        return f"{case.dataset}/{case.case_id}: {e}"
    except Exception as e:  # noqa: BLE001 - one broken case must not lose the others
        return f"{case.dataset}/{case.case_id} ({case.image}): unexpected {type(e).__name__}: {e}"


def prepare_case(case: SourceCase, case_dir: Path, settings: dict, classes: list[str]) -> dict[str, Any]:
    """Load, normalise, reorient and resample one case; write it atomically. Returns its meta."""
    image, label = case.load()
    spacing = tuple(settings["spacing"])
    prepared_image, geometry = prepare_scan(image.array, image.affine, case.modality, settings, image.path)  # type: ignore[arg-type]
    prepared_label = None
    if label is not None:
        prepared_label, _ = to_prepared(label.astype(np.uint8, copy=False), image.affine, spacing, mode="nearest")  # type: ignore[arg-type]
    meta = {
        "case_id": case.case_id,
        "dataset": case.dataset,
        "modality": case.modality,
        "source_files": source_records(case),
        "label_map": _label_map(case, classes),
        "annotated": list(case.annotated),
        "annotated_ids": [classes.index(c) + 1 for c in case.annotated],
        "has_label": label is not None,
        "original": {
            "affine": geometry.original_affine.tolist(),
            "shape": list(geometry.original_shape),
            "spacing": list(geometry.original_spacing),
            "orientation": list(geometry.orientation),
        },
        "prepared": {
            "affine": geometry.prepared_affine.tolist(),
            "shape": list(geometry.prepared_shape),
            "spacing": list(geometry.prepared_spacing),
        },
        "geometry": geometry.to_json(),
        "class_locations": class_locations(prepared_label, seed=zlib.crc32(f"{case.dataset}/{case.case_id}".encode())),
        "settings": settings,
        "tctseg_version": tctseg.__version__,
    }
    partial = case_dir.parent / f"{case_dir.name}{_PARTIAL}{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        np.save(partial / "image.npy", prepared_image.astype(np.float32, copy=False))
        if prepared_label is not None:
            np.save(partial / "label.npy", prepared_label.astype(np.uint8, copy=False))
        (partial / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)  # the complete version (if any) stays in place
        raise OutputError(f"{partial}: cannot write the prepared case ({e.strerror or e})") from None
    if case_dir.exists():  # an outdated version: move aside, put the new one in place, then delete
        stale = case_dir.parent / f"{case_dir.name}{_STALE}{os.getpid()}"
        os.replace(case_dir, stale)
        os.replace(partial, case_dir)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(partial, case_dir)
    return meta


def class_locations(label: np.ndarray | None, seed: int, limit: int = MAX_CLASS_LOCATIONS) -> dict[str, list[list[int]]]:
    """{global id: up to ``limit`` voxel coordinates [x, y, z] of that class}, a seeded sample."""
    if label is None:
        return {}
    flat = label.ravel()
    index = np.flatnonzero(flat)
    values = flat[index]
    rng = np.random.default_rng(seed)
    out: dict[str, list[list[int]]] = {}
    for c in np.unique(values):
        chosen = index[values == c]
        if chosen.size > limit:
            chosen = np.sort(rng.choice(chosen, size=limit, replace=False))
        out[str(int(c))] = np.stack(np.unravel_index(chosen, label.shape), axis=1).tolist()
    return out


# --------------------------------------------------------------------------- reading


def _read_case(case_dir: Path, dataset: DatasetConfig, classes: list[str]) -> PreparedCase:
    meta_path = case_dir / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{meta_path}: cannot read prepared case ({e}); run `tctseg prepare CONFIG` again") from None
    if meta.get("label_map", {}).get("classes") != list(classes):
        raise DataError(
            f"{meta_path}: prepared for classes {meta.get('label_map', {}).get('classes')}, "
            f"but the config has {classes}; run `tctseg prepare CONFIG` again"
        )
    return PreparedCase(
        case_id=meta["case_id"],
        dataset=dataset.name,
        modality=meta["modality"],
        annotated=tuple(int(i) for i in meta["annotated_ids"]),
        meta=meta,
        folder=case_dir,
    )


def load_prepared(config: Config, role: str) -> list[PreparedCase]:
    """The complete prepared cases of every dataset with ``role``.

    Raises DataError (with a hint to run ``tctseg prepare``) if a dataset or case is missing.
    """
    root = cache_root(config)
    out: list[PreparedCase] = []
    for dataset in config.datasets_with_role(role):
        dataset_dir = root / dataset.name
        hint = f"run `tctseg prepare CONFIG --datasets {dataset.name}` first"
        if not dataset_dir.is_dir():
            raise DataError(f"{dataset_dir}: dataset {dataset.name!r} is not prepared; {hint}")
        complete = {
            p.name: p
            for p in sorted(dataset_dir.iterdir())
            if p.is_dir() and _PARTIAL not in p.name and _STALE not in p.name and (p / "meta.json").exists()
        }
        if dataset.cases is not None:
            missing = [c for c in dataset.cases if c not in complete]
            if missing:
                raise DataError(f"{dataset_dir / missing[0]}: case of {dataset.name!r} is not prepared; {hint}")
            names = list(dataset.cases)
        else:
            names = list(complete)
        names = [n for n in names if n not in set(dataset.exclude_cases or [])]
        if not names:
            raise DataError(f"{dataset_dir}: no prepared cases of {dataset.name!r}; {hint}")
        out.extend(_read_case(complete[n], dataset, config.classes) for n in names)
    return out


__all__ = ["PreparedCase", "prepare", "prepare_case", "load_prepared", "fingerprint", "cache_root", "class_locations", "select_cases"]
