"""Bad input never crashes: every corrupt, odd or absurd input gives the project's own error.

Property-based (hypothesis, derandomised so CI is deterministic) plus hand-made cases against
the NIfTI and DICOM loaders, the nnU-Net/MSD converter (dataset.json) and the config loader.
Each case checks: the error is a TctsegError subclass naming the file (or key), the input
file is unchanged afterwards, and a prepared cache is never overwritten by a failing case.

Run with ``-s`` to print how many cases each property tried (docs/RELIABILITY.md lists them).
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import math
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from _training_data import phantom_volume, write_nnunet_dataset, write_run_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tctseg.config import DatasetConfig, config_from_dict, load_config
from tctseg.data.conversion import nnunet
from tctseg.data.io import load_label, load_volume
from tctseg.errors import ConfigError, DataError, LabelError, TctsegError

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TRIED: collections.Counter = collections.Counter()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True, scope="module")
def _report_counts():
    yield
    print("\nfuzz cases tried:", dict(TRIED), "total", sum(TRIED.values()))


def _digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256(b"".join(_digest(p).encode() for p in sorted(path.rglob("*")) if p.is_file())).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _valid_nifti(folder: Path, name: str = "scan.nii.gz", shape=(6, 5, 4)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    array = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    path = folder / name
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 2.5, 1.0])), path)
    return path


def _load_or_data_error(path: Path, *, integer: bool) -> str:
    """Load; a success must be a finite 3D volume, a failure a DataError naming the file."""
    before = _digest(path)
    try:
        volume = load_volume(path, integer=integer)
    except DataError as e:
        assert str(path) in str(e) or path.name in str(e), str(e)
        assert "\n" not in str(e), "the command line prints one line"
        outcome = "error"
    else:
        assert volume.array.ndim == 3 and 0 not in volume.array.shape
        assert np.isfinite(volume.affine).all() and all(s > 0 for s in volume.spacing)
        if not integer:
            assert volume.array.dtype == np.float32 and np.isfinite(volume.array).all()
        else:
            assert np.issubdtype(volume.array.dtype, np.integer)
        outcome = "ok"
    assert _digest(path) == before, "the input file was changed"
    return outcome


# --------------------------------------------------------------------------- NIfTI: corrupt bytes


@FUZZ
@given(data=st.data())
def test_nifti_with_flipped_or_truncated_bytes_loads_or_gives_a_data_error(tmp_path, data):
    gz = data.draw(st.booleans(), label="gzipped")
    path = _valid_nifti(tmp_path / f"f{TRIED['nifti_bytes']}", "scan.nii.gz" if gz else "scan.nii")
    raw = bytearray(path.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            # the 348-byte header is where corruption is most varied; the rest is voxels
            position = data.draw(st.integers(0, min(len(raw) - 1, 400)), label="position")
            raw[position] = data.draw(st.integers(0, 255), label="byte")
    path.write_bytes(bytes(raw))
    TRIED["nifti_bytes"] += 1
    _load_or_data_error(path, integer=data.draw(st.booleans(), label="integer"))


NIFTI_DTYPE_CODES = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 77]


@FUZZ
@given(
    dims=st.lists(st.integers(-5, 32767), min_size=8, max_size=8),
    datatype=st.sampled_from(NIFTI_DTYPE_CODES),
    pixdim=st.lists(st.sampled_from([0.0, -1.0, 1.0, 2.5, float("nan"), float("inf"), 1e-30]), min_size=8, max_size=8),
    vox_offset=st.sampled_from([0.0, 352.0, 348.0, 1e9, -4.0]),
    sform_code=st.sampled_from([0, 1, 2]),
)
def test_nifti_with_a_wrong_header_loads_or_gives_a_data_error(tmp_path, dims, datatype, pixdim, vox_offset, sform_code):
    """Header fields written as raw bytes: absurd dims (up to 32767^7), odd dtypes, zero/NaN spacing."""
    path = _valid_nifti(tmp_path / f"h{TRIED['nifti_header']}", "scan.nii")
    raw = bytearray(path.read_bytes())
    struct.pack_into("<8h", raw, 40, *dims)
    struct.pack_into("<h", raw, 70, datatype)
    struct.pack_into("<8f", raw, 76, *pixdim)
    struct.pack_into("<f", raw, 108, vox_offset)
    struct.pack_into("<h", raw, 254, sform_code)
    path.write_bytes(bytes(raw))
    TRIED["nifti_header"] += 1
    _load_or_data_error(path, integer=False)
    _load_or_data_error(path, integer=True)


ODD_DTYPES = [np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
              np.float16, np.float32, np.float64, np.complex64, np.complex128]


@FUZZ
@given(
    dtype=st.sampled_from(ODD_DTYPES),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=5),
    special=st.sampled_from([None, np.nan, np.inf, -np.inf, 0.5]),
    integer=st.booleans(),
)
def test_odd_dtypes_and_dimensions_load_or_give_a_data_error(tmp_path, dtype, shape, special, integer):
    """bool/complex/float16/int64/uint16..., 1D to 5D, NaN/inf/fractional voxels."""
    array = np.ones(shape, dtype=np.float64)
    if special is not None:
        array.flat[0] = special
    with np.errstate(invalid="ignore"):
        array = array.astype(dtype)
    path = tmp_path / f"d{TRIED['dtypes']}.nii.gz"
    header_dtype = np.uint8 if dtype is np.bool_ else np.float32 if dtype is np.float16 else dtype
    try:
        nib.save(nib.Nifti1Image(array.astype(header_dtype), np.eye(4), dtype=header_dtype), path)
    except Exception:  # noqa: BLE001 - nibabel cannot store this combination; nothing to read
        return
    TRIED["dtypes"] += 1
    outcome = _load_or_data_error(path, integer=integer)
    three_d = len(shape) >= 3 and all(s == 1 for s in shape[3:])
    if not three_d or np.issubdtype(dtype, np.complexfloating):
        assert outcome == "error"
    if special is not None and not math.isfinite(special) and np.issubdtype(dtype, np.floating):
        assert outcome == "error"


def test_rgb_voxels_give_a_data_error(tmp_path):
    rgb = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), path)
    for integer in (False, True):
        with pytest.raises(DataError, match="rgb.nii.gz: voxel type .*not supported"):
            load_volume(path, integer=integer)
    TRIED["hand_made"] += 2


@pytest.mark.parametrize("claimed", [(1000, 1000, 1000), (32767, 32767, 32767), (30000, 30000, 2)])
@pytest.mark.parametrize("gz", [False, True])
def test_a_header_claiming_absurd_dimensions_fails_fast_without_allocating(tmp_path, claimed, gz):
    path = _valid_nifti(tmp_path, "small.nii")
    raw = bytearray(path.read_bytes())
    struct.pack_into("<8h", raw, 40, 3, *claimed, 1, 1, 1, 1)
    target = tmp_path / ("big.nii.gz" if gz else "big.nii")
    target.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    with pytest.raises(DataError, match=r"big\.nii(\.gz)?: header claims shape"):
        load_volume(target)
    TRIED["hand_made"] += 1


@pytest.mark.parametrize("affine", [
    np.diag([0.0, 1.0, 1.0, 1.0]),
    np.diag([1.0, 1.0, np.nan, 1.0]),
    np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float),
])
def test_zero_nan_or_singular_spacing_gives_a_data_error(tmp_path, affine):
    path = _valid_nifti(tmp_path, "zero.nii")
    raw = bytearray(path.read_bytes())
    struct.pack_into("<2h", raw, 252, 0, 1)  # qform_code 0, sform_code 1: the affine is the srows
    struct.pack_into("<12f", raw, 280, *affine[:3].ravel())
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="zero.nii: geometry"):
        load_volume(path)
    TRIED["hand_made"] += 1


def test_zero_pixdim_without_an_sform_gives_a_data_error(tmp_path):
    image = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), None)
    image.header["pixdim"][1:4] = 0
    path = tmp_path / "pix0.nii.gz"
    nib.save(image, path)
    with pytest.raises(DataError, match=r"pix0.nii.gz: voxel spacing \(pixdim\)"):
        load_volume(path)
    TRIED["hand_made"] += 1


@pytest.mark.parametrize("name,content", [("empty.nii.gz", b""), ("text.nii", b"hello" * 100),
                                          ("scan.mha", b"x"), ("folder_missing.nii.gz", None)])
def test_unreadable_or_missing_files_give_a_data_error(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        load_volume(path)
    TRIED["hand_made"] += 1


# --------------------------------------------------------------------------- geometry, labels


@FUZZ
@given(shift=st.just(0.0) | st.floats(0.01, 5) | st.floats(-5, -0.01), shape_change=st.sampled_from([(0, 0, 0), (1, 0, 0), (0, 0, -1)]))
def test_label_on_another_grid_gives_a_data_error_naming_the_label(tmp_path, shift, shape_change):
    image_path = _valid_nifti(tmp_path / f"g{TRIED['geometry']}", "img.nii.gz")
    image = load_volume(image_path)
    shape = tuple(s + d for s, d in zip(image.shape, shape_change))
    affine = image.affine.copy()
    affine[0, 3] += shift
    label_path = image_path.with_name("lab.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), affine), label_path)
    TRIED["geometry"] += 1
    if shape_change == (0, 0, 0) and shift == 0.0:
        assert load_label(label_path, reference=image).shape == image.shape
        return
    with pytest.raises(DataError, match="lab.nii.gz: label (shape|geometry)"):
        load_label(label_path, reference=image)


@settings(FUZZ, max_examples=8)
@given(value=st.integers(3, 255) | st.integers(-100, -1))
def test_label_value_outside_the_mapping_gives_a_label_error_and_keeps_the_cache(tmp_path, value):
    from tctseg.preprocessing.cache import prepare

    root = tmp_path / f"l{TRIED['label_values']}"
    config_path = write_run_config(root)
    config = load_config(config_path)
    prepare(config, progress=False, workers=1)
    cache = root / "cache"
    cached = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}

    label_path = root / "raw" / "labelsTr" / "case_001.nii.gz"
    label = np.asarray(nib.load(label_path).dataobj).astype(np.int16)
    label[0, 0, 0] = value
    nib.save(nib.Nifti1Image(label, np.eye(4)), label_path)
    before = _digest(label_path)
    TRIED["label_values"] += 1
    with pytest.raises(DataError, match=f"labelsTr/case_001.nii.gz holds label {value}, but dataset.json defines only 0, 1, 2") as info:
        prepare(config, progress=False, workers=1)
    assert isinstance(info.value, TctsegError)
    assert _digest(label_path) == before
    # the earlier, complete preparation of case_001 is still there, byte for byte
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == cached


def test_label_error_type_from_source_case(tmp_path):
    root = write_nnunet_dataset(tmp_path / "raw", seeds=(0,))
    label_path = root / "labelsTr" / "case_000.nii.gz"
    label = np.asarray(nib.load(label_path).dataobj).copy()
    label[1, 1, 1] = 9
    nib.save(nib.Nifti1Image(label, np.eye(4)), label_path)
    dataset = DatasetConfig(name="d", format="nnunet", path=str(root), label_map={1: "liver", 2: "spleen"})
    (case,) = nnunet.find_cases(dataset, ["liver", "spleen"])
    with pytest.raises(LabelError, match="case_000.nii.gz holds label 9"):
        case.load()
    TRIED["hand_made"] += 1


# --------------------------------------------------------------------------- DICOM


def _dicom_series(folder: Path, slices: int = 4) -> Path:
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    image = sitk.GetImageFromArray(np.arange(slices * 20, dtype=np.int16).reshape(slices, 4, 5))
    image.SetSpacing((0.7, 0.7, 3.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1"
    for k in range(slices):
        piece = image[:, :, k]
        for tag, value in (("0020|000e", uid + ".2"), ("0020|000d", uid + ".1"), ("0020|0013", str(k + 1)),
                           ("0020|0032", f"0\\0\\{3.0 * k}"), ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0008|0060", "CT")):
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(piece)
    return folder


@pytest.fixture(scope="module")
def dicom_bytes(tmp_path_factory) -> dict[str, bytes]:
    folder = _dicom_series(tmp_path_factory.mktemp("dicom") / "series")
    volume = load_volume(folder)
    assert volume.shape == (5, 4, 4)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@FUZZ
@given(data=st.data())
def test_dicom_series_with_corrupt_slices_loads_or_gives_a_data_error(tmp_path, dicom_bytes, data):
    folder = tmp_path / f"s{TRIED['dicom']}"
    folder.mkdir()
    names = sorted(dicom_bytes)
    for name in names:
        (folder / name).write_bytes(dicom_bytes[name])
    victim = folder / data.draw(st.sampled_from(names), label="slice")
    action = data.draw(st.sampled_from(["truncate", "flip", "delete", "garbage", "empty"]), label="action")
    raw = bytearray(victim.read_bytes())
    if action == "truncate":
        victim.write_bytes(bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]))
    elif action == "flip":
        for _ in range(data.draw(st.integers(1, 6), label="flips")):
            raw[data.draw(st.integers(0, len(raw) - 1), label="position")] = data.draw(st.integers(0, 255), label="byte")
        victim.write_bytes(bytes(raw))
    elif action == "delete":
        victim.unlink()
    elif action == "garbage":
        (folder / "notes.txt").write_bytes(b"not dicom")
    else:
        for p in folder.iterdir():
            p.unlink()
    TRIED["dicom"] += 1
    _load_or_data_error(folder, integer=data.draw(st.booleans(), label="integer"))


# --------------------------------------------------------------------------- converters: dataset.json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
LABELS = st.dictionaries(
    st.sampled_from(["0", "1", "2", "background", "liver", "spleen", "-1", "x"]),
    st.sampled_from([0, 1, 2, "0", "1", "liver", "background", None, [1, 2], 1.5, True]),
    max_size=4,
)


@pytest.fixture(scope="module")
def nnunet_source(tmp_path_factory) -> Path:
    return write_nnunet_dataset(tmp_path_factory.mktemp("nnunet") / "raw", seeds=(0,))


def _find_cases_or_error(root: Path, document: bytes, label_map) -> None:
    (root / "dataset.json").write_bytes(document)
    before = _digest(root)
    dataset = DatasetConfig(name="d", format="nnunet", path=str(root), label_map=label_map)
    try:
        cases = nnunet.find_cases(dataset, ["liver", "spleen"])
    except (DataError, ConfigError) as e:
        assert "dataset.json" in str(e) or str(root) in str(e), str(e)
    else:
        for case in cases:
            try:
                case.load()
            except DataError as e:
                assert case.case_id in str(e), str(e)
    assert _digest(root) == before


@FUZZ
@given(document=JSON, labels=LABELS, channels=JSON, ending=st.sampled_from([".nii.gz", ".nii", 5, None, "", ".mha"]),
       use=st.sampled_from(["document", "fields"]), label_map=st.sampled_from([None, {1: "liver"}]))
def test_dataset_json_with_missing_or_wrong_keys_gives_a_data_error(tmp_path, nnunet_source, document, labels,
                                                                    channels, ending, use, label_map):
    import shutil

    root = tmp_path / f"j{TRIED['dataset_json']}"
    shutil.copytree(nnunet_source, root)
    if use == "fields":
        document = {"labels": labels, "channel_names": channels}
        if ending is not None:
            document["file_ending"] = ending
    TRIED["dataset_json"] += 1
    _find_cases_or_error(root, json.dumps(document).encode(), label_map)


@pytest.mark.parametrize("document", [b"", b"{", b"\xff\xfe\x00garbage", b"[1, 2]", b'"labels"', b"null",
                                      b'{"labels": {}}', b'{"labels": {"1": "liver"}, "channel_names": {"0": "PET"}}'])
def test_dataset_json_that_is_not_valid_gives_a_data_error(tmp_path, nnunet_source, document):
    import shutil

    root = tmp_path / "raw"
    shutil.copytree(nnunet_source, root)
    with pytest.raises(DataError, match="dataset.json"):
        (root / "dataset.json").write_bytes(document)
        nnunet.find_cases(DatasetConfig(name="d", format="nnunet", path=str(root)), ["liver", "spleen"])
    TRIED["hand_made"] += 1


# --------------------------------------------------------------------------- config loader

BASE_CONFIG = {
    "classes": ["liver", "spleen"],
    "datasets": [{"name": "a", "format": "nnunet", "path": "/x", "label_map": {1: "liver"}}],
}
# every field of every section, with the section it lives in
CONFIG_FIELDS = [
    ("", "classes"), ("", "datasets"), ("", "cache_dir"), ("", "output_dir"),
    *[("datasets.0", f) for f in ("name", "format", "path", "role", "modality", "label_map", "classes", "cases",
                                  "exclude_cases", "sampling_weight")],
    *[("preprocessing", f) for f in ("spacing", "ct_clip", "mr_percentiles", "workers")],
    *[("network", f) for f in ("width", "depth", "norm", "channels_last")],
    *[("method", f) for f in ("name", "consistency", "threshold", "filter", "confidence_threshold",
                              "weighting", "lambda_max", "rampup_fraction", "detach_aux", "options")],
    *[("train", f) for f in ("epochs", "iterations_per_epoch", "batch_size", "patch_size", "optimizer", "lr",
                             "weight_decay", "schedule", "seed", "amp", "val_every", "num_workers",
                             "foreground_fraction", "augment", "max_nonfinite_steps")],
    *[("inference", f) for f in ("overlap", "sw_batch_size", "tta_flip", "largest_component")],
    ("", "no_such_key"), ("train", "epochz"),
]
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10) | st.sampled_from(["five", "1e-3", "[1, 2]", "median", "tct", "CT", "${HOME}"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5) | st.integers(0, 3), inner, max_size=3),
    max_leaves=6,
)


def _with(section: str, key: str, value) -> dict:
    import copy

    raw = copy.deepcopy(BASE_CONFIG)
    node = raw
    for part in [p for p in section.split(".") if p]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[key] = value
    return raw


@FUZZ
@given(field=st.sampled_from(CONFIG_FIELDS), value=YAML_VALUES)
def test_config_with_a_wrong_value_gives_a_config_error_naming_the_key(field, value):
    section, key = field
    TRIED["config_values"] += 1
    try:
        config_from_dict(_with(section, key, value))
    except ConfigError as e:
        message = str(e)
        top = section.split(".")[0] or key
        assert message.startswith((top, "datasets", "classes")), message
        assert "\n" not in message
    else:
        assert key not in ("no_such_key", "epochz")


@FUZZ
@given(field=st.sampled_from(CONFIG_FIELDS), value=YAML_VALUES)
def test_yaml_config_file_with_wrong_types_gives_a_config_error_naming_file_and_key(tmp_path, field, value):
    section, key = field
    path = tmp_path / f"c{TRIED['config_files']}.yaml"
    text = yaml.safe_dump(_with(section, key, value))
    path.write_text(text)
    TRIED["config_files"] += 1
    try:
        load_config(path)
    except ConfigError as e:
        assert str(e).startswith(f"{path}: "), str(e)
    assert path.read_text() == text


@FUZZ
@given(text=st.text(max_size=60) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_any_text_as_a_config_file_gives_a_config_error_naming_the_file(tmp_path, text):
    path = tmp_path / f"t{TRIED['config_text']}.yaml"
    path.write_text(text, encoding="utf-8")
    TRIED["config_text"] += 1
    with pytest.raises(ConfigError, match=f"^{path}: "):
        load_config(path)


@pytest.mark.parametrize("content", [
    b"\xff\xfe\xfa",
    b"classes: [a\n", b"a: b: c", b"- 1\n- 2", b"classes: !!python/object:os.system x"])
def test_unreadable_yaml_gives_a_config_error(tmp_path, content):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(path)
    TRIED["hand_made"] += 1


@pytest.mark.parametrize("key,value", [("preprocessing.spacing", [float("nan"), 1.0, 1.0]), ("train.lr", float("inf"))])
def test_non_finite_numbers_in_the_config_give_a_config_error(key, value):
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=key):
        config_from_dict(_with(section, name, value))


# --------------------------------------------------------------------------- hostile YAML (issue 19)


def _billion_laughs(levels: int, under_classes: bool) -> str:
    """``levels`` anchors, each a list of 9 aliases of the one before: 9^levels strings once expanded."""
    values = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    values += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    if under_classes:  # every anchor inside a known key, so no "unknown key" can stop it early
        return "classes:\n" + "".join(f"  - {v}\n" for v in values) + "datasets: []\n"
    return "".join(f"l{i}: {v}\n" for i, v in enumerate(values)) + f"classes: *l{levels - 1}\ndatasets: []\n"


HOSTILE_YAML = {
    "recursive_anchor": ("classes: &r [liver, *r]\ndatasets: []\n", "alias *r refers to the value that anchor &r"),
    "recursive_mapping": ("a: &m {b: *m}\n", "alias *m refers to the value that anchor &m"),
    "billion_laughs_9": (_billion_laughs(9, False), "aliases expand to"),
    "billion_laughs_8_under_classes": (_billion_laughs(8, True), "aliases expand to"),
    "duplicate_top_level_key": ("classes: [liver]\ndatasets: []\nclasses: [spleen]\n",
                                "line 3: key 'classes' is given twice (first at line 1)"),
    "duplicate_nested_key": ("classes: [liver]\ndatasets: []\ntrain: {epochs: 2, epochs: 3}\n",
                             "key 'epochs' is given twice"),
    "two_documents": ("classes: [liver]\ndatasets: []\n---\nclasses: [spleen]\n",
                      "holds more than one YAML document (another starts at line 3)"),
    "undefined_variable": ("classes: [liver]\ndatasets: []\ncache_dir: ${TCTSEG_TEST_SURELY_UNSET_VARIABLE}/cache\n",
                           "cache_dir: environment variable TCTSEG_TEST_SURELY_UNSET_VARIABLE is not set"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
def test_hostile_yaml_gives_one_line_naming_the_file_before_anything_is_built(tmp_path, monkeypatch, case):
    """Alias bombs, recursive anchors, duplicate keys, several documents, an unset ${VAR}."""
    text, expected = HOSTILE_YAML[case]
    monkeypatch.delenv("TCTSEG_TEST_SURELY_UNSET_VARIABLE", raising=False)
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and expected in message, message
    assert "\n" not in message
    TRIED["hostile_yaml"] += 1


def test_yaml_that_only_looks_hostile_still_loads(tmp_path, monkeypatch):
    """A merge key overriding a merged key, shared anchors within the bound, set and defaulted ${VAR}s."""
    monkeypatch.setenv("TCTSEG_TEST_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("TCTSEG_TEST_EMPTY", "")
    path = tmp_path / "fine.yaml"
    path.write_text(
        "classes: &c [liver, spleen]\n"
        "datasets: []\n"
        "cache_dir: ${TCTSEG_TEST_CACHE}\n"
        "output_dir: ${TCTSEG_TEST_EMPTY:-runs/x}\n"
        "train: &t {epochs: 2, batch_size: 1}\n"
        "inference:\n  overlap: 0.25\n"
    )
    config = load_config(path)
    assert config.classes == ["liver", "spleen"] and config.cache_dir == str(tmp_path / "c")
    assert config.output_dir == "runs/x" and config.train.epochs == 2
    from tctseg.config import read_yaml

    assert read_yaml("a: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n") == {"a": {"x": 1, "y": 2}, "c": {"x": 3, "y": 2}}


# --------------------------------------------------------------------------- absurd resampling (issue 19)


def test_a_scan_in_metres_or_a_micrometre_target_spacing_is_refused_before_allocating(tmp_path):
    """Both directions: voxels of 1 m resampled to 1 mm, and 1 mm voxels resampled to 1e-6 mm."""
    from tctseg.preprocessing import to_prepared

    path = tmp_path / "metres.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 40), np.float32), np.diag([800.0, 800.0, 1000.0, 1.0])), path)
    volume = load_volume(path)
    with pytest.raises(DataError) as caught:  # 51200 x 51200 x 40000 voxels: 419 TB as float32
        to_prepared(volume.array, volume.affine, (1.0, 1.0, 1.0), source=volume.path)
    message = str(caught.value)
    assert message.startswith(f"{path}: resampling its [64, 64, 40] voxels of [800.0, 800.0, 1000.0] mm") and "\n" not in message
    assert "would need shape [51200, 51200, 40000] (1.05e+14 voxels, 4.19e+05 GB as float32)" in message
    fine = tmp_path / "fine.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 40), np.float32), np.diag([0.8, 0.8, 1.0, 1.0])), fine)
    volume = load_volume(fine)
    with pytest.raises(DataError, match=r"fine.nii.gz: resampling .* to \[1e-06, 1e-06, 1e-06\] mm"):
        to_prepared(volume.array, volume.affine, (1e-6, 1e-6, 1e-6), source=volume.path)
    TRIED["hand_made"] += 2


@pytest.mark.parametrize("spacing", [[1e-6, 1e-6, 1e-6], [1.0, 1.0, 0.001], [0.0, 1.0, 1.0]])
def test_a_target_spacing_below_10_micrometres_is_a_config_error(spacing):
    with pytest.raises(ConfigError, match=r"^preprocessing.spacing: every spacing must be at least 0.01 mm"):
        config_from_dict(_with("preprocessing", "spacing", spacing))
    TRIED["hand_made"] += 1


# --------------------------------------------------------------------------- DICOM geometry (issue 19)

REAL_SERIES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct-example" / "dicom_series"


def _edited_series(folder: Path, edit) -> Path:
    """A copy of the real 20-slice CT series with ``edit(slices)`` applied; ``slices``: [(path, dataset)] by position."""
    import shutil

    import pydicom

    shutil.copytree(REAL_SERIES, folder)
    slices = [(p, pydicom.dcmread(p)) for p in sorted(folder.iterdir())]
    slices.sort(key=lambda s: float(s[1].ImagePositionPatient[2]))
    changed = edit(slices)
    for path, dataset in slices:
        if path in changed:
            dataset.save_as(path)
    return folder


def _drop_slice(slices):
    slices[9][0].unlink()
    return []


def _shift(axis: int, mm: float):
    def edit(slices):
        position = [float(v) for v in slices[9][1].ImagePositionPatient]
        position[axis] += mm
        slices[9][1].ImagePositionPatient = position
        return [slices[9][0]]
    return edit


def _oblique_slice(slices):
    angle = np.deg2rad(10)
    slices[9][1].ImageOrientationPatient = [1, 0, 0, 0, float(np.cos(angle)), float(np.sin(angle))]
    return [slices[9][0]]


def _without_positions(which: str):
    def edit(slices):
        chosen = slices if which == "all" else slices[9:10]
        for _, dataset in chosen:
            del dataset.ImagePositionPatient
        return [path for path, _ in chosen]
    return edit


def _duplicate_position(slices):
    slices[10][1].ImagePositionPatient = list(slices[9][1].ImagePositionPatient)
    return [slices[10][0]]


BROKEN_SERIES = {
    "missing_slice": (_drop_slice, r"slices \S+ and \S+ are 4.000 mm apart, the series' other slices 2.000 mm \(about 1 slice\(s\) missing"),
    "slice_shifted_5mm_along_the_stack": (_shift(2, 5.0), r"are \d.\d+ mm apart, the series' other slices 2.000 mm"),
    "slice_shifted_5mm_in_plane": (_shift(0, 5.0), r"slice \S+ is shifted 5 mm within its plane"),
    "one_oblique_slice": (_oblique_slice, r"slice \S+ has orientation \[1, 0, 0, 0, 0.9848, 0.1736\], slice \S+ \[1, 0, 0, 0, 1, 0\]"),
    "no_positions": (_without_positions("all"), r"slice \S+ has no valid ImagePositionPatient"),
    "one_slice_without_position": (_without_positions("one"), r"slice \S+ has no valid ImagePositionPatient"),
    "two_slices_at_one_position": (_duplicate_position, r"slices \S+ and \S+ are at the same position"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_SERIES))
def test_dicom_series_with_wrong_geometry_is_refused_naming_series_and_slice(tmp_path, case):
    """Each series built from the real one; ITK alone would read every one of them in silence."""
    edit, expected = BROKEN_SERIES[case]
    folder = _edited_series(tmp_path / "series", edit)
    before = _digest(folder)
    with pytest.raises(DataError) as caught:
        load_volume(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder}: ") and "\n" not in message, message
    assert __import__("re").search(expected, message), message
    assert _digest(folder) == before
    TRIED["dicom_geometry"] += 1


def test_the_real_dicom_series_and_a_consistently_oblique_copy_still_load(tmp_path):
    volume = load_volume(_edited_series(tmp_path / "plain", lambda slices: []))
    assert volume.shape == (512, 512, 20) and np.allclose(volume.spacing, (0.9765625, 0.9765625, 2.0))

    def tilt_everything(slices):  # the whole series rotated 10° about x: oblique, but one regular grid
        angle = np.deg2rad(10)
        row, column = np.array([1.0, 0, 0]), np.array([0, np.cos(angle), np.sin(angle)])
        normal = np.cross(row, column)
        for i, (_, dataset) in enumerate(slices):
            dataset.ImageOrientationPatient = [*row, *column]
            dataset.ImagePositionPatient = list(np.array([-250.0, -437.5, -804.5]) + 2.0 * i * normal)
        return [path for path, _ in slices]

    tilted = load_volume(_edited_series(tmp_path / "tilted", tilt_everything))
    assert np.allclose(tilted.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-4)


# --------------------------------------------------------------------------- ambiguous geometry, KiTS19 without images (issue 19)


def test_qform_sform_disagreement_and_shear_warn_once_naming_the_file(tmp_path):
    import warnings

    from tctseg.errors import GeometryWarning

    disagree = tmp_path / "disagree.nii.gz"
    image = nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), np.diag([0.8, 0.8, 2.5, 1.0]))
    qform = np.diag([0.8, 0.8, 2.5, 1.0])
    qform[:3, 3] = [10.0, 0.0, 0.0]  # the qform 10 mm off the sform
    image.set_qform(qform, code=1)
    image.set_sform(np.diag([0.8, 0.8, 2.5, 1.0]), code=1)
    nib.save(image, disagree)
    sheared = tmp_path / "sheared.nii.gz"
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[0, 2] = 0.5  # the slice axis leans 14° into x
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), affine), sheared)
    plain = _valid_nifti(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):  # once per file, however often it is read
            volume = load_volume(disagree)
            load_volume(sheared)
            load_volume(plain)
    messages = [str(w.message) for w in caught if issubclass(w.category, GeometryWarning)]
    assert len(messages) == 2, messages
    assert messages[0].startswith(f"{disagree}: the header's qform and sform disagree (origins 10 mm apart")
    assert "tctseg uses the sform" in messages[0] and np.allclose(volume.affine, np.diag([0.8, 0.8, 2.5, 1.0]))
    assert messages[1].startswith(f"{sheared}: the affine is sheared (voxel axes 14° off perpendicular)")
    TRIED["hand_made"] += 2


def test_a_kits19_folder_without_images_is_one_line(tmp_path):
    import shutil

    from tctseg.data.conversion import kits19

    source = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kits19-labels"
    root = tmp_path / "kits19"
    for case in sorted(source.iterdir())[:3]:  # real label folders, as a clone without get_imaging.py has them
        shutil.copytree(case, root / case.name)
    dataset = DatasetConfig(name="kits", format="kits19", path=str(root))
    with pytest.raises(DataError) as caught:
        kits19.find_cases(dataset, ["kidney"])
    message = str(caught.value)
    assert message.startswith(f"{root}: 3 of 3 KiTS19 case folders hold no imaging.nii.gz (first: case_00000)")
    assert "get_imaging.py" in message and "\n" not in message
    TRIED["hand_made"] += 1
