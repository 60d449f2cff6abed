"""What every converter produces: :class:`SourceCase`, plus the label-mapping helpers they share.

A converter turns a dataset folder (in its own layout) into SourceCases. A SourceCase knows
its files and how the dataset's own label ids map to the global ids 1..N of
``config.classes`` (``label_lut``); :meth:`SourceCase.load` reads and maps them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from tctseg.config import DatasetConfig
from tctseg.data.io import Volume, load_label, load_volume
from tctseg.errors import DataError, LabelError

# Dataset label names (normalised) -> global class names; anything else keeps its own name.
SYNONYMS: dict[str, str] = {
    "liver": "liver",
    "hepatic": "liver",
    "spleen": "spleen",
    "pancreas": "pancreas",
    "kidney": "kidney",
    "kidneys": "kidney",
    "right_kidney": "right_kidney",
    "kidney_right": "right_kidney",
    "rkidney": "right_kidney",
    "r_kidney": "right_kidney",
    "left_kidney": "left_kidney",
    "kidney_left": "left_kidney",
    "lkidney": "left_kidney",
    "l_kidney": "left_kidney",
    "gallbladder": "gallbladder",
    "gall_bladder": "gallbladder",
    "stomach": "stomach",
    "esophagus": "esophagus",
    "oesophagus": "esophagus",
    "aorta": "aorta",
    "inferior_vena_cava": "inferior_vena_cava",
    "postcava": "inferior_vena_cava",
    "ivc": "inferior_vena_cava",
    "duodenum": "duodenum",
    "bladder": "bladder",
    "background": "background",
    "ignore": "ignore",
}
TUMOUR_WORDS = ("cancer", "tumour", "tumor", "lesion", "cyst", "mass", "metastasis")
# label names that mean "no organ": their ids become global id 0
UNLABELLED_NAMES = ("background", "ignore")


def normalise_name(name: str) -> str:
    """'Right Kidney' -> 'right_kidney' (lower case, words joined by underscores)."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def canonical_name(name: str) -> str:
    n = normalise_name(name)
    return SYNONYMS.get(n, n)


@dataclass
class LabelMapping:
    """How one dataset's label ids become global ids.

    ``lut``: dataset id -> global id (0 = background / not wanted); ``annotated``: the global
    class names the dataset annotates (after ``DatasetConfig.classes``); ``source``: where
    the dataset's ids came from, for error messages (e.g. ``dataset.json``).
    """

    lut: dict[int, int]
    annotated: tuple[str, ...]
    source: str


def build_mapping(
    dataset_labels: dict[int, str],
    dataset: DatasetConfig,
    classes: list[str],
    source: str,
) -> LabelMapping:
    """Map a dataset's {id: name} onto global ids.

    ``DatasetConfig.label_map`` (id -> global name, ``background``/``ignore`` -> 0) wins over
    the names; otherwise names are matched through :data:`SYNONYMS`, tumour labels merge into
    the dataset's organ (SPEC "Preprocessing"), and a left/right kidney becomes ``kidney`` when
    only that is configured. Classes outside ``classes`` (or ``dataset.classes``) become 0.
    """
    names = {int(k): canonical_name(v) for k, v in dataset_labels.items()}
    if dataset.label_map:
        for k, v in dataset.label_map.items():
            names[int(k)] = v
    organs = [n for n in names.values() if n not in UNLABELLED_NAMES and not _is_tumour(n)]
    wanted = set(dataset.classes) if dataset.classes else set(classes)
    lut: dict[int, int] = {}
    for label_id, name in names.items():
        if _is_tumour(name):
            name = _tumour_organ(name, organs)
        if name not in classes and name in ("left_kidney", "right_kidney") and "kidney" in classes:
            name = "kidney"
        lut[label_id] = classes.index(name) + 1 if name in classes and name in wanted else 0
    annotated = tuple(c for c in classes if classes.index(c) + 1 in lut.values())
    return LabelMapping(lut=lut, annotated=annotated, source=source)


def _is_tumour(name: str) -> bool:
    return any(w in name for w in TUMOUR_WORDS)


def _tumour_organ(name: str, organs: list[str]) -> str:
    for organ in organs:
        if organ in name:  # e.g. "liver_tumor"
            return organ
    # an MSD task holds one organ: its "cancer" label belongs to that organ
    return organs[0] if len(set(organs)) == 1 else name


def apply_lut(label: np.ndarray, mapping: LabelMapping, path: Path) -> np.ndarray:
    """Dataset ids [X, Y, Z] -> global ids uint8; LabelError names the file and an undefined value."""
    defined = sorted(mapping.lut)
    low, high = int(label.min()), int(label.max())
    if low < 0 or high > max(defined):
        bad = low if low < 0 else high
        raise LabelError(_undefined_message(path, bad, defined, mapping.source))
    present = np.flatnonzero(np.bincount(label.ravel()))
    undefined = [int(v) for v in present if int(v) not in mapping.lut]
    if undefined:
        raise LabelError(_undefined_message(path, undefined[0], defined, mapping.source))
    return relabel(label, mapping.lut, np.uint8)


def relabel(label: np.ndarray, lut: dict[int, int], dtype: type = np.uint8) -> np.ndarray:
    """``lut[v]`` for every voxel value ``v`` of an integer (or bool) label map ``[X, Y, Z]``,
    as ``dtype``: one table lookup. Every value must be a key of ``lut`` (the callers check
    first, each naming the file in its own words)."""
    label = np.asarray(label)
    if label.size == 0:
        return np.zeros(label.shape, dtype=dtype)
    if label.dtype == np.bool_:
        label = label.view(np.uint8)  # a bool array would index the table as a mask
    low, high = min(int(label.min()), 0), int(label.max())
    table = np.zeros(high - low + 1, dtype=dtype)
    for k, v in lut.items():
        if low <= k <= high:
            table[k - low] = v
    return table[label - low] if low else table[label]


def _undefined_message(path: Path, value: int, defined: list[int], source: str) -> str:
    shown = f"{path.parent.name}/{path.name}"
    return f"{shown} holds label {value}, but {source} defines only {', '.join(map(str, defined))}"


@dataclass
class SourceCase:
    """One case of a dataset as downloaded: files, modality, and its label mapping.

    ``annotated``: the global class NAMES this case annotates. ``load()`` returns the image
    Volume and the label in global ids (uint8 [X, Y, Z], same voxel order as the image) or
    None for a case without a label.
    """

    dataset: str
    case_id: str
    image: Path
    label: Path | None
    modality: str
    annotated: tuple[str, ...]
    mapping: LabelMapping = field(repr=False)

    def load(self) -> tuple[Volume, np.ndarray | None]:
        image = load_volume(self.image)
        if self.label is None:
            return image, None
        if not self.label.exists():
            raise DataError(f"{self.label}: label file not found (image {self.image})")
        label = load_label(self.label, reference=image)
        return image, self.map_label(label, image)

    def map_label(self, label: np.ndarray, image: Volume) -> np.ndarray:
        """Dataset ids -> global ids; converters with special rules (KiTS19) override this."""
        assert self.label is not None
        return apply_lut(label, self.mapping, self.label)

    def label_map_record(self) -> dict:
        """What decides the label ids of the prepared case (a change means preparing it again)."""
        return {"lut": {str(k): v for k, v in sorted(self.mapping.lut.items())}, "annotated": list(self.annotated)}

    def source_files(self) -> list[Path]:
        """Every file whose change means the case must be prepared again."""
        files: list[Path] = []
        for p in (self.image, self.label):
            if p is None:
                continue
            files.extend(sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p])
        return files


# --------------------------------------------------------------------------- shared layout helpers


def read_dataset_json(root: Path) -> dict:
    path = root / "dataset.json"
    if not path.exists():
        raise DataError(f"{path}: not found (expected in the dataset folder {root})")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read dataset.json ({e})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object with 'labels', got {type(info).__name__}")
    return info


def labels_from_dataset_json(info: dict, path: Path) -> dict[int, str]:
    """{id: name} from MSD ({"0": "background"}) or nnU-Net v2 ({"background": 0}) labels."""
    labels = info.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{path}: has no 'labels' mapping")
    out: dict[int, str] = {}
    for k, v in labels.items():
        if isinstance(v, (list, tuple)):  # nnU-Net v2 region labels: not a plain label map
            raise DataError(f"{path}: region-based label '{k}' is not supported; give datasets.label_map")
        if str(k).lstrip("-").isdigit():
            out[int(k)] = str(v)
        elif isinstance(v, int) or str(v).isdigit():
            out[int(v)] = str(k)
        else:
            raise DataError(f"{path}: cannot read label entry {k!r}: {v!r}")
    return out


def modality_from_dataset_json(info: dict, path: Path) -> str | None:
    channels = info.get("channel_names") or info.get("modality")
    if not isinstance(channels, dict) or not channels:
        return None
    first = str(channels.get("0", next(iter(channels.values())))).upper()
    if "CT" in first:
        return "CT"
    if any(w in first for w in ("MR", "T1", "T2", "FLAIR", "ADC", "DWI")):
        return "MR"
    raise DataError(f"{path}: modality {first!r} is neither CT nor MR; set datasets.modality")


def visible_files(folder: Path, ending: str) -> list[Path]:
    """Files in ``folder`` ending with ``ending``, skipping hidden and macOS ``._*`` files."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(ending) and not p.name.startswith("."))


def paired_cases(
    image_dir: Path, label_dir: Path | None, ending: str, *, channel_suffix: bool | None = None
) -> list[tuple[str, Path, Path | None]]:
    """(case_id, image, label) for ``<case>[_0000]<ending>`` images and ``<case><ending>`` labels.

    A label without an image (or an image without its label, when ``label_dir`` exists) is
    still listed, so that loading it reports the missing file.
    """
    images: dict[str, Path] = {}
    for p in visible_files(image_dir, ending):
        stem = p.name[: -len(ending)]
        match = re.fullmatch(r"(.+)_(\d{4})", stem)
        if match and channel_suffix is not False:
            if match.group(2) != "0000":
                continue  # further channels of a multi-channel case: the model reads channel 0
            stem = match.group(1)
        images[stem] = p
    labels = {p.name[: -len(ending)]: p for p in visible_files(label_dir, ending)} if label_dir else {}
    cases = []
    for case_id in sorted(set(images) | set(labels)):
        image = images.get(case_id, image_dir / f"{case_id}_0000{ending}" if channel_suffix else image_dir / f"{case_id}{ending}")
        label = labels.get(case_id) if label_dir is None or not label_dir.is_dir() else labels.get(case_id, label_dir / f"{case_id}{ending}")
        cases.append((case_id, image, label))
    return cases


def select_cases(cases: list[SourceCase], dataset: DatasetConfig) -> list[SourceCase]:
    """Apply ``DatasetConfig.cases`` (in that order; unknown ids are an error) and ``exclude_cases``."""
    by_id = {c.case_id: c for c in cases}
    if dataset.cases is not None:
        missing = [c for c in dataset.cases if c not in by_id]
        if missing:
            known = ", ".join(list(by_id)[:5]) + (", ..." if len(by_id) > 5 else "")
            raise DataError(f"{dataset.path}: dataset {dataset.name!r} has no case {missing[0]!r} (cases: {known})")
        cases = [by_id[c] for c in dataset.cases]
    excluded = set(dataset.exclude_cases or [])
    return [c for c in cases if c.case_id not in excluded]


def dataset_root(dataset: DatasetConfig) -> Path:
    root = Path(dataset.path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder of {dataset.name!r} not found")
    return root


def make_cases(
    dataset: DatasetConfig,
    triples: Iterable[tuple[str, Path, Path | None]],
    modality: str,
    mapping: LabelMapping,
    case_type: type[SourceCase] = SourceCase,
) -> list[SourceCase]:
    cases = [
        case_type(dataset.name, cid, image, label, modality, mapping.annotated if label else (), mapping)
        for cid, image, label in triples
    ]
    if not cases:
        raise DataError(f"{dataset.path}: no cases found for dataset {dataset.name!r} (format {dataset.format})")
    return select_cases(cases, dataset)


def dataset_labels(root: Path, builtin: dict[int, str], name: str) -> tuple[dict[int, str], str]:
    """The label table of a release folder: its ``dataset.json`` where present (it wins),
    else the converter's ``builtin`` table; with a description of where it came from."""
    path = root / "dataset.json"
    if path.exists():
        return labels_from_dataset_json(read_dataset_json(root), path), "dataset.json"
    return builtin, f"the {name} label list"
