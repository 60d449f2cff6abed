"""Typed configuration: dataclasses loaded from YAML, with ``--set key=value`` overrides.

Every hyperparameter lives here, never as a hidden attribute of a trainer. A config file
is a YAML mapping whose sections mirror the dataclasses below::

    classes: [liver, spleen, left_kidney, right_kidney, pancreas]
    datasets:
      - {name: kits19, format: kits19, path: data/phantom/raw/kits19, role: train}
    preprocessing: {spacing: [1.0, 1.0, 3.0]}
    network: {width: 16, depth: 5, norm: batch}
    method: {name: tct, threshold: median}
    train: {epochs: 200, batch_size: 4, patch_size: [192, 192, 64]}

Unknown keys and ill-typed values raise :class:`~tctseg.errors.ConfigError` naming the key
(``train.epochs: expected int, got 'five'``); so does a dataset or class name that is not a
plain folder name (``datasets.0.name: dataset name 'data/kits19' is not a plain name ...``),
a value out of its range (``train.num_workers: must be >= 0, got -1``, a ``ct_clip`` whose low
bound is not below its high one), a ``method.options`` key no method reads, and a
``train.patch_size`` × ``batch_size`` × ``network.width`` whose training step is estimated
(:func:`training_memory_gb`) above :data:`MAX_TRAINING_MEMORY_GB`.
Strings may use ``${VAR}`` or ``${VAR:-default}`` to read environment variables (e.g. where
the shared data lives); an unset ``${VAR}`` without a default is an error naming the variable.

YAML is read with :class:`ConfigLoader`, a SafeLoader that also refuses what would make a
config mean something its author did not see: a key given twice in one mapping, more than
one document in the file, an alias that refers to itself, and aliases that expand to more
than :data:`MAX_YAML_VALUES` values (a "billion laughs" file is refused in milliseconds,
before anything is built).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

# the allowed values of every named setting live in tctseg.settings (one home, also used by
# the code that acts on them)
from tctseg import settings
from tctseg.errors import ConfigError

# values (scalars, lists, mappings) a config may hold once every alias is expanded; the
# largest shipped config holds ~200, a "billion laughs" file 10^9
MAX_YAML_VALUES = 100_000
# the finest preprocessing.spacing accepted: 10 µm, far below any CT/MR voxel (0.3 mm and up);
# 1e-6 mm would resample a scan to terabytes
MIN_SPACING_MM = 0.01
# a dataset's name and a class name become folder names (the cache's <dataset>/, PFL's
# stage1/<class>/, predictions/<dataset>/): a plain name, never a path
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# network.width and network.depth: the paper's net is 16 and 5 (Tab. 6); far beyond these the
# U-Net's parameters alone exceed any machine (width 10^6 at depth 5: 1.6·10^16 parameters)
MAX_NETWORK_WIDTH = 512
MAX_NETWORK_DEPTH = 8
# training_memory_gb: float32 bytes autograd keeps per voxel of a patch per width channel
# (measured with torch's saved-tensor hooks: TCT, TAL and ME 71–100 at widths 4–16, depth 3–5)
ACTIVATION_BYTES_PER_VOXEL_CHANNEL = 96
# a training step estimated above this is refused when the config is read, before the cache is
# prepared or anything allocated; twice the largest single accelerator (256 GB), as AMP halves
# the activations. The paper's setting (patch 192×192×64, batch 4, width 16) is about 15 GB.
MAX_TRAINING_MEMORY_GB = 512


@dataclass
class DatasetConfig:
    """One dataset as the user downloaded it.

    ``format`` picks the converter (``kits19``, ``msd``, ``chaos_nifti``, ``chaos_dicom``,
    ``btcv``, ``word``, ``amos``, or ``nnunet`` — the generic door for any nnU-Net-raw or
    MSD-format dataset). ``label_map`` maps the dataset's own label ids to global class
    names (required for ``nnunet``; overrides a converter's default elsewhere; a name of
    ``background`` or ``ignore`` maps a label to 0). ``classes`` restricts which global
    classes this dataset contributes as annotated (e.g. one organ per CHAOS partition).
    ``cases`` restricts it to these case ids (in the given order); ``exclude_cases``
    removes case ids. ``optional``: a dataset whose ``path`` is empty (e.g. an unset
    ``${VAR:-}``) is left out instead of refused — for test sets a user adds when they have
    them. ``name``, like every class name, becomes a folder name (the cache's, the
    predictions'), so it must be a plain name (:func:`check_name`), never a path.
    """

    name: str
    format: str
    path: str
    role: str = "train"
    modality: str | None = None
    label_map: dict[int, str] | None = None
    classes: list[str] | None = None
    cases: list[str] | None = None
    exclude_cases: list[str] | None = None
    sampling_weight: float = 1.0
    optional: bool = False


@dataclass
class PreprocessingConfig:
    """Paper §4.1: RAS, CT clip/scale, MR percentile scaling, resampling (SPEC "Preprocessing")."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 3.0)
    ct_clip: tuple[float, float] = (-1024.0, 1024.0)
    mr_percentiles: tuple[float, float] = (0.5, 99.5)
    workers: int = 2


@dataclass
class NetworkConfig:
    """3D U-Net of paper Tab. 6; ``width`` 16 and ``depth`` 5 is the paper's net."""

    width: int = 16
    depth: int = 5
    norm: str = "batch"
    channels_last: bool = True


@dataclass
class MethodConfig:
    """Which method turns a batch into a loss, and its switches (paper ablations Tab. 5, 7–9).

    ``filter``: ``iou`` (the paper's filter, default) | ``confidence`` (Tab. 8: no IoU filter;
    voxels where ATH j's entropy confidence is below ``confidence_threshold`` are left out of
    term j; SPEC "Eq. 5–6", Tab. 8 revised).
    ``threshold``: ``median`` | ``task_mean`` | ``batch_mean`` | a float | null (no filter);
    the IoU filter's θ.
    ``empty_classes``: what the filter does with a class absent from both heads' masks in a
    patch: ``keep`` its term (SPEC default) | ``drop`` it | ``as_one`` (the earlier rule: absent
    counts as IoU = 1, also in θ; ablation only).
    ``weighting``: ``uauwl`` (Eq. 7, two learned terms) | ``uwl`` (1 + N terms) | ``fixed``.
    ``rampup_fraction``: ramp-up length of w(t) as a fraction of ``train.epochs``.
    ``options``: method-specific extras for baselines (documented by each method).
    """

    name: str = "tct"
    consistency: bool = True
    threshold: Union[str, float, None] = "median"
    empty_classes: str = "keep"
    filter: str = "iou"
    confidence_threshold: float = 0.5
    weighting: str = "uauwl"
    lambda_max: float = 1.0
    rampup_fraction: float = 0.4
    detach_aux: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation and sampling. Defaults are the paper's (§4.1)."""

    epochs: int = 200
    iterations_per_epoch: int = 250
    batch_size: int = 4
    patch_size: tuple[int, int, int] = (192, 192, 64)
    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str = "constant"
    seed: int = 0
    amp: str = "auto"
    val_every: int = 10
    num_workers: int = 2
    foreground_fraction: float = 0.33
    augment: bool = True
    augment_preset: str = "light"
    max_nonfinite_steps: int = 5


@dataclass
class InferenceConfig:
    """Sliding-window prediction (MONAI, Gaussian blending)."""

    overlap: float = 0.5
    sw_batch_size: int = 1
    tta_flip: bool = False
    largest_component: bool = False


@dataclass
class Config:
    """A whole experiment: classes, datasets and every setting of every stage."""

    classes: list[str]
    datasets: list[DatasetConfig]
    cache_dir: str = "cache"
    output_dir: str = "runs/default"
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    @property
    def num_classes(self) -> int:
        """N, the number of foreground classes (global ids 1..N)."""
        return len(self.classes)

    def class_id(self, name: str) -> int:
        """Global id (1..N) of a class name."""
        try:
            return self.classes.index(name) + 1
        except ValueError:
            raise ConfigError(f"classes: unknown class {name!r}; known: {self.classes}") from None

    def datasets_with_role(self, role: str) -> list[DatasetConfig]:
        return [d for d in self.datasets if d.role == role]

    def with_method(self, name: str, **switches: Any) -> Config:
        """A copy with ``method.name`` = ``name`` and the given ``method`` fields changed
        (e.g. ``threshold=None``); every other setting is this config's."""
        return dataclasses.replace(self, method=dataclasses.replace(self.method, name=name, **switches))

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-safe dict (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file, apply ``key=value`` overrides, check every key and type."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file") from None
    try:
        raw = read_yaml(text)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(raw).__name__}")
    try:
        return config_from_dict(raw, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def read_yaml(text: str) -> Any:
    """Parse one YAML document with :class:`ConfigLoader`; every refusal is a one-line ConfigError."""
    loader = None
    try:
        loader = ConfigLoader(text)  # its reader refuses control characters already here
        return loader.get_single_data()
    except yaml.composer.ComposerError as e:
        if e.problem == "but found another document" and e.problem_mark is not None:
            raise ConfigError(
                f"holds more than one YAML document (another starts at line {e.problem_mark.line + 1}); "
                "a config is one document"
            ) from None
        raise ConfigError(f"not valid YAML ({_one_line(e)})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML ({_one_line(e)})") from None
    except RecursionError:
        raise ConfigError("not valid YAML (nested too deeply)") from None
    finally:
        if loader is not None:
            loader.dispose()


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, recursive aliases and alias bombs.

    Aliases are checked while the node graph is composed, before any Python object is
    built: the graph shares an aliased node, but everything after it (copying, ``${VAR}``
    expansion, building the dataclasses) walks the expansion.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._open_anchors: dict[str, int] = {}  # anchors whose node is being composed -> line

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in self._open_anchors:
            raise ConfigError(
                f"line {event.start_mark.line + 1}: alias *{event.anchor} refers to the value that "
                f"anchor &{event.anchor} (line {self._open_anchors[event.anchor]}) is still defining; "
                "a recursive value is refused"
            )
        opened = None
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)) and event.anchor is not None:
            opened = event.anchor
            self._open_anchors[opened] = event.start_mark.line + 1
        try:
            return super().compose_node(parent, index)
        finally:
            if opened is not None:
                self._open_anchors.pop(opened, None)

    def compose_document(self):
        node = super().compose_document()
        values = _expanded_size(node, {})
        if values > MAX_YAML_VALUES:
            raise ConfigError(
                f"its aliases expand to {values:.3g} values, more than the {MAX_YAML_VALUES} a config may "
                "hold (a YAML alias bomb?); refused before reading it"
            )
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys a `<<:` merge brings in may be overridden on purpose
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error says so
                seen[key] = line
                if first is not None:
                    raise ConfigError(
                        f"line {line}: key {key!r} is given twice (first at line {first}); YAML would keep "
                        "only the last, remove one"
                    )
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Values under ``node`` (itself included) with every alias expanded; ``memo`` by node id."""
    known = memo.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = size
    return size


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Build a checked :class:`Config` from a plain mapping (plus ``key=value`` overrides)."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        apply_override(raw, item)
    raw = _expand_env(raw, "")
    _replace_confidence_filter(raw)
    config = _build(Config, raw, "")
    _check_names(config)  # before optional datasets are left out, so the index is the file's
    config.datasets = [d for d in config.datasets if not (d.optional and not d.path.strip())]
    _validate(config)
    return config


def _replace_confidence_filter(raw: Any) -> None:
    """``method.confidence_filter`` (until 2026-12: a per-term mean confidence applied ON TOP of
    the IoU filter) became ``method.filter: confidence`` (the confidence strategy INSTEAD of
    the IoU filter, SPEC Tab. 8 revised). A saved ``false`` (every run folder and checkpoint of
    that time) is read as the default; ``true`` named a filter that no longer exists."""
    method = raw.get("method") if isinstance(raw, dict) else None
    if not isinstance(method, dict) or "confidence_filter" not in method:
        return
    if method.pop("confidence_filter") not in (False, None):
        raise ConfigError(
            "method.confidence_filter: replaced by method.filter: confidence (the confidence strategy "
            "of Tab. 8 now replaces the IoU filter; SPEC Eq. 5–6); set that instead"
        )


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
    key, value_text = item.split("=", 1)
    try:
        value = read_yaml(value_text)
    except ConfigError:
        value = value_text
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, where)]
        else:
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"--set {key}: {where} is not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    else:
        node[last] = value


def _list_index(node: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {where}: index must be 0..{len(node) - 1}")
    return int(part)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any, where: str) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in every string; an unset VAR without a default is refused."""
    if isinstance(value, str):
        return _ENV.sub(lambda m: _env_value(m.group(1), m.group(2), where), value)
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}.{i}") for i, v in enumerate(value)]
    return value


def _env_value(name: str, default: str | None, where: str) -> str:
    value = os.environ.get(name)
    if value:  # set and not empty; an empty one takes the default, as in the shell's ${VAR:-default}
        return value
    if default is not None:
        return default
    if value is None:
        raise ConfigError(
            f"{where or 'config'}: environment variable {name} is not set (write ${{{name}:-}} for an empty default)"
        )
    return value


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else str(unknown[0])
        raise ConfigError(f"{key}: unknown key (known here: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name in raw:
            kwargs[name] = _coerce(raw[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"{key}: expected {names}, got {_show(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_show(value)}")
        return [_coerce(v, args[0], f"{key}.{i}") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {len(args)}, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}.{i}") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}.{i}") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_show(value)}")
        return {
            _coerce(k, args[0], f"{key}.{k}"): _coerce(v, args[1], f"{key}.{k}")
            for k, v in value.items()
        }
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
    elif hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{key}: expected a finite number, got {value}")
            return number
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            raise ConfigError(
                f"{key}: expected a string, got {_show(value)} (YAML reads an unquoted off/on/no/yes as a "
                f"boolean: write it in quotes, e.g. '{'on' if value else 'off'}')"
            )
    raise ConfigError(f"{key}: expected {_type_name(hint)}, got {_show(value)}")


def check_name(key: str, name: str, what: str) -> None:
    """Refuse (ConfigError naming ``key``) a name that is not a plain folder name: it must match
    :data:`NAME_PATTERN` (letters, digits, ``_``, ``.``, ``-``; starting with a letter or digit)
    and hold no ``..``, so it can never be empty, absolute, or reach outside its parent folder."""
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"{key}: {what} {name!r} is not a plain name (letters, digits, '_', '.', '-', starting with a "
            "letter or digit, no '..'); it becomes a folder name, never a path"
        )


def _check_names(config: Config) -> None:
    for i, c in enumerate(config.classes):
        check_name(f"classes.{i}", c, "class name")
    for i, d in enumerate(config.datasets):
        check_name(f"datasets.{i}.name", d.name, "dataset name")
        for source, c in (d.label_map or {}).items():
            if c not in ("background", "ignore"):
                check_name(f"datasets.{i}.label_map.{source}", c, "class name")


def _validate(config: Config) -> None:
    if not config.classes:
        raise ConfigError("classes: at least one class is needed")
    if len(set(config.classes)) != len(config.classes):
        raise ConfigError(f"classes: duplicate names in {config.classes}")
    names = set()
    for i, d in enumerate(config.datasets):
        key = f"datasets.{i}"
        if d.name in names:
            raise ConfigError(f"{key}.name: duplicate dataset name {d.name!r}")
        names.add(d.name)
        if not d.path.strip():
            raise ConfigError(f"{key}.path: is empty (an unset ${{VAR}}?); mark the dataset optional: true to leave it out then")
        settings.check_choice(f"{key}.format", d.format, settings.DATASET_FORMATS)
        settings.check_choice(f"{key}.role", d.role, settings.DATASET_ROLES)
        if d.modality is not None:
            settings.check_choice(f"{key}.modality", d.modality, settings.MODALITIES)
        for c in (d.classes or []) + [v for v in (d.label_map or {}).values() if v not in ("background", "ignore")]:
            if c not in config.classes:
                raise ConfigError(f"{key}: class {c!r} is not in classes {config.classes}")
        if d.sampling_weight <= 0:
            raise ConfigError(f"{key}.sampling_weight: must be > 0, got {d.sampling_weight}")
    t = config.train
    for name in ("epochs", "iterations_per_epoch", "batch_size", "val_every", "max_nonfinite_steps"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name}: must be >= 1, got {getattr(t, name)}")
    for name in ("num_workers", "seed"):
        if getattr(t, name) < 0:
            raise ConfigError(f"train.{name}: must be >= 0, got {getattr(t, name)}")
    settings.check_patch_size("train.patch_size", t.patch_size)
    if t.lr <= 0:
        raise ConfigError(f"train.lr: must be > 0, got {t.lr}")
    if t.weight_decay < 0:
        raise ConfigError(f"train.weight_decay: must be >= 0, got {t.weight_decay}")
    settings.check_choice("train.amp", t.amp, settings.AMP_MODES)
    settings.check_choice("train.schedule", t.schedule, settings.SCHEDULES)
    settings.check_choice("train.optimizer", t.optimizer, settings.OPTIMIZERS)
    settings.check_choice("train.augment_preset", t.augment_preset, settings.AUGMENT_PRESETS)
    if not 0.0 <= t.foreground_fraction <= 1.0:
        raise ConfigError(f"train.foreground_fraction: must be in [0, 1], got {t.foreground_fraction}")
    n = config.network
    if not 1 <= n.width <= MAX_NETWORK_WIDTH:
        raise ConfigError(f"network.width: must be in 1..{MAX_NETWORK_WIDTH} (the paper's is 16), got {n.width}")
    if not 2 <= n.depth <= MAX_NETWORK_DEPTH:
        raise ConfigError(f"network.depth: must be in 2..{MAX_NETWORK_DEPTH} (the paper's is 5), got {n.depth}")
    settings.check_choice("network.norm", n.norm, settings.NORMS)
    _check_training_memory(t, n)
    m = config.method
    if isinstance(m.threshold, str) and m.threshold not in settings.THRESHOLDS:
        raise ConfigError(f"method.threshold: {m.threshold!r} is not {', '.join(settings.THRESHOLDS)}, a number or null")
    settings.check_choice("method.filter", m.filter, settings.CONSISTENCY_FILTERS)
    if not 0.0 <= m.confidence_threshold <= 1.0:
        raise ConfigError(f"method.confidence_threshold: expected a value in [0, 1], got {m.confidence_threshold}")
    settings.check_choice("method.empty_classes", m.empty_classes, settings.EMPTY_RULES)
    settings.check_choice("method.weighting", m.weighting, settings.WEIGHTINGS)
    if not 0.0 <= m.rampup_fraction <= 1.0:
        raise ConfigError(f"method.rampup_fraction: must be in [0, 1], got {m.rampup_fraction}")
    if m.lambda_max < 0:
        raise ConfigError(f"method.lambda_max: must be >= 0, got {m.lambda_max}")
    settings.check_method_options(m.name, m.options)
    p = config.preprocessing
    if any(s < MIN_SPACING_MM for s in p.spacing):
        raise ConfigError(
            f"preprocessing.spacing: every spacing must be at least {MIN_SPACING_MM} mm, got {list(p.spacing)}"
        )
    if not p.ct_clip[0] < p.ct_clip[1]:
        raise ConfigError(
            f"preprocessing.ct_clip: the low bound must be below the high one (e.g. [-1024, 1024] HU), "
            f"got {list(p.ct_clip)}"
        )
    if not 0.0 <= p.mr_percentiles[0] < p.mr_percentiles[1] <= 100.0:
        raise ConfigError(
            f"preprocessing.mr_percentiles: expected 0 <= low < high <= 100 (e.g. [0.5, 99.5]), "
            f"got {list(p.mr_percentiles)}"
        )
    if p.workers < 0:
        raise ConfigError(f"preprocessing.workers: must be >= 0, got {p.workers}")
    if not 0.0 <= config.inference.overlap < 1.0:
        raise ConfigError(f"inference.overlap: must be in [0, 1), got {config.inference.overlap}")
    if config.inference.sw_batch_size < 1:
        raise ConfigError(f"inference.sw_batch_size: must be >= 1, got {config.inference.sw_batch_size}")


def unet_parameters(width: int, depth: int) -> int:
    """The convolution weights of the shared 3D U-Net (:class:`tctseg.network.UNet3D`) of this
    width and depth, without biases, norms or heads (4.12 M of the 4.13 M at width 16, depth 5)."""
    skips = [width * 2**s for s in range(depth - 1)]
    total, channels = 0, 1
    for s, out in enumerate(skips):
        mid = width if s == 0 else channels
        total += 27 * (channels * mid + mid * out)
        channels = out
    total += 27 * (channels * channels + channels * 2 * channels)  # the bottleneck doubles
    channels *= 2
    for skip in reversed(skips):
        total += 27 * ((channels + skip) * skip + skip * skip)
        channels = skip
    return total


def training_memory_gb(patch_size: tuple[int, int, int], batch_size: int, width: int, depth: int) -> float:
    """Estimated memory (GB) of one training step, worked out from the settings alone:
    float32 activations (:data:`ACTIVATION_BYTES_PER_VOXEL_CHANNEL` per voxel of the patch,
    padded as the U-Net pads it to a multiple of 2^(depth−1), per width channel, per sample)
    plus 16 bytes per U-Net parameter (weight, gradient, Adam's two moments). It counts what
    autograd keeps for the backward pass (measured for TCT, TAL and ME), not the backward's
    transient buffers; AMP keeps less, the task-prompted DoDNet and Hermes up to a third more."""
    divisor = 2 ** (depth - 1)
    voxels = math.prod(-(-int(p) // divisor) * divisor for p in patch_size)
    activations = int(batch_size) * voxels * int(width) * ACTIVATION_BYTES_PER_VOXEL_CHANNEL  # exact, any size
    try:
        return (activations + 16 * unet_parameters(width, depth)) / 1e9
    except OverflowError:  # a patch or batch of 10^300
        return math.inf


def _check_training_memory(t: TrainConfig, n: NetworkConfig) -> None:
    gb = training_memory_gb(t.patch_size, t.batch_size, n.width, n.depth)
    if gb <= MAX_TRAINING_MEMORY_GB:
        return
    paper = training_memory_gb((192, 192, 64), 4, 16, 5)
    size = f"about {gb:.3g} GB" if math.isfinite(gb) else "more than 1e+300 GB"
    raise ConfigError(
        f"train.patch_size {_show(list(t.patch_size))} × train.batch_size {_show(t.batch_size)} × network.width "
        f"{n.width} (network.depth {n.depth}): a training step would need {size} (float32 activations and "
        f"parameters, estimated before anything is allocated), more than the {MAX_TRAINING_MEMORY_GB} GB tctseg "
        f"allows; lower one of them (the paper's [192, 192, 64] × 4 × 16 needs about {paper:.0f} GB)"
    )


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
