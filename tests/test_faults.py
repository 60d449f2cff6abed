"""Nothing is lost under faults: SIGKILL during train/prepare/predict, unwritable or full outputs,
and checkpoints that do not match (or hold code) are refused.

Kill points are drawn from a seeded generator, so a failure reproduces. Every process runs on
one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)) so CPU results are bit-identical.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import os
import pathlib
import random
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _processes import kill_when, running
from _training_data import interrupted_after_epochs, memory_cases, phantom_volume, tiny_config, write_run_config

from tctseg.cli import main
from tctseg.config import load_config
from tctseg.errors import CheckpointError, OutputError
from tctseg.checkpoint import load_checkpoint
from tctseg.training import Trainer

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
RNG = random.Random(20240609)  # the kill points


pytestmark = pytest.mark.usefixtures("one_thread")


def _tctseg(*args) -> list[str]:
    return [sys.executable, "-m", "tctseg", *map(str, args)]


def _kill_when(command: list[str], ready, delay: float, timeout: float = 120) -> None:
    kill_when(command, ready, delay, ENV, timeout)


def _epochs_logged(run: Path) -> list[str]:
    if not (run / "log.csv").exists():
        return []
    with (run / "log.csv").open(newline="") as f:
        return [row["epoch"] for row in csv.DictReader(f) if row.get("epoch")]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- SIGKILL during training


@pytest.mark.slow
def test_three_sigkills_during_training_each_resumed_reach_the_uninterrupted_weights(tmp_path):
    epochs = 8
    config_path = write_run_config(tmp_path, epochs=epochs, iterations_per_epoch=16, val_every=4)
    run = tmp_path / "killed"
    command = _tctseg("train", config_path, "--output", run, "--device", "cpu", "--no-progress")
    # three distinct epochs after which to kill, each with a random delay into the next epoch
    # (mid-step, mid-validation or mid-checkpoint-write)
    kill_after = sorted(RNG.sample(range(1, epochs - 1), 3))
    delays = [RNG.uniform(0.0, 0.25) for _ in kill_after]
    for i, (epoch, delay) in enumerate(zip(kill_after, delays)):
        _kill_when(command + (["--resume"] if i else []), lambda e=epoch: len(_epochs_logged(run)) >= e, delay)
        assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] >= epoch  # never a half-written checkpoint
        assert not list(run.glob("*.tmp-*")) or all(not p.name.endswith(".pt") for p in run.glob("*.tmp-*"))
    finished = subprocess.run(command + ["--resume"], env=ENV, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert _epochs_logged(run) == [str(e) for e in range(1, epochs + 1)]

    reference = Trainer(load_config(config_path), tmp_path / "straight", device="cpu", progress=False)
    reference.fit()
    last = load_checkpoint(run / "checkpoint_last.pt")
    _assert_same_weights(reference.method.state_dict(), last["model"])
    assert last["best_metric"] == reference.best_metric
    _assert_same_weights(load_checkpoint(tmp_path / "straight" / "checkpoint_best.pt")["model"],
                         load_checkpoint(run / "checkpoint_best.pt")["model"])


# --------------------------------------------------------------------------- SIGKILL during prepare


def _cache_arrays(cache: Path) -> dict[str, str]:
    return {str(p.relative_to(cache)): _sha(p) for p in sorted(cache.rglob("*.npy"))}


@pytest.mark.slow
def test_sigkill_during_prepare_leaves_no_half_case_in_use_and_a_rerun_equals_a_clean_run(tmp_path):
    from _training_data import write_nnunet_dataset
    import yaml

    from tctseg.preprocessing.cache import cache_root, load_prepared, prepare

    data = write_nnunet_dataset(tmp_path / "raw", seeds=())
    for seed in range(8):  # larger than the helper's volumes, so that the kill lands mid-way
        image, label = phantom_volume(seed, (64, 64, 40))
        nib.save(nib.Nifti1Image(image * 400 - 100, np.eye(4)), data / "imagesTr" / f"case_{seed:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), data / "labelsTr" / f"case_{seed:03d}.nii.gz")
    raw = {
        "classes": ["liver", "spleen"], "cache_dir": str(tmp_path / "cache"),
        "datasets": [{"name": "d", "format": "nnunet", "path": str(data), "label_map": {1: "liver", 2: "spleen"}}],
        "preprocessing": {"spacing": [0.5, 0.5, 0.5], "workers": 1},
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    config = load_config(config_path)
    dataset_dir = cache_root(config) / "d"
    _kill_when(_tctseg("prepare", config_path, "--quiet"),
               lambda: dataset_dir.is_dir() and any(dataset_dir.iterdir()), RNG.uniform(0.0, 0.2))
    done = [p for p in dataset_dir.iterdir() if ".partial-" not in p.name]
    assert len(done) < 8, "prepare finished before the kill"
    # a partial folder (left by this kill, or planted: the kill may land between cases) is never read
    planted = dataset_dir / "case_007.partial-99999"
    planted.mkdir(exist_ok=True)
    (planted / "meta.json").write_text("{half")
    (planted / "image.npy").write_bytes(b"\x93NUMPY half")
    visible = {c.case_id for c in load_prepared(config, "train")} if done else set()
    assert visible == {p.name for p in done}
    for case in (load_prepared(config, "train") if done else []):
        assert np.asarray(case.image).shape == tuple(case.meta["prepared"]["shape"])

    rerun = subprocess.run(_tctseg("prepare", config_path, "--quiet"), env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert not [p for p in dataset_dir.iterdir() if ".partial-" in p.name or ".stale-" in p.name]

    clean = load_config(config_path, [f"cache_dir={tmp_path / 'clean'}"])
    prepare(clean, progress=False, workers=1)
    assert _cache_arrays(tmp_path / "cache") == _cache_arrays(tmp_path / "clean")
    assert len(_cache_arrays(tmp_path / "cache")) == 16


# --------------------------------------------------------------------------- SIGKILL during predict


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    train, _ = memory_cases()
    run = tmp_path_factory.mktemp("model")
    Trainer(tiny_config("tct", epochs=1, iterations_per_epoch=1), run, device="cpu", train_cases=train,
            val_cases=[], progress=False).fit()
    return run / "checkpoint_last.pt"


def _write_scans(folder: Path, count: int, shape=(40, 40, 24)) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        image, _ = phantom_volume(i, shape)
        nib.save(nib.Nifti1Image((image * 400 - 100).astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0])),
                 folder / f"scan{i}.nii.gz")
    return folder


def _assert_outputs_complete(out: Path, scans: Path) -> None:
    for path in out.iterdir():
        if path.name.endswith(".nii.gz"):
            assert not path.name.startswith("."), path  # temp names never look like outputs
            labels = np.asarray(nib.load(path).dataobj)  # reads (and gunzips) every byte
            assert labels.shape == nib.load(scans / path.name).shape


@pytest.mark.slow
def test_sigkill_during_predict_leaves_no_output_looking_complete_and_a_rerun_finishes(tmp_path, tiny_checkpoint):
    from tctseg.inference import predict_cases

    scans = _write_scans(tmp_path / "scans", 6)
    out = tmp_path / "out"
    command = _tctseg("predict", tiny_checkpoint, scans, out, "--modality", "CT", "--no-progress")
    _kill_when(command, lambda: out.is_dir() and any(p.name.endswith(".nii.gz") for p in out.iterdir()),
               RNG.uniform(0.0, 0.3))
    written = [p for p in out.iterdir() if p.name.endswith(".nii.gz")]
    assert 1 <= len(written) < 6, "predict finished before the kill"
    _assert_outputs_complete(out, scans)

    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(written)} skipped" in rerun.stdout
    _assert_outputs_complete(out, scans)
    predict_cases(tiny_checkpoint, [scans], tmp_path / "clean", modality="CT", progress=False)
    for i in range(6):
        name = f"scan{i}.nii.gz"
        assert np.array_equal(np.asarray(nib.load(out / name).dataobj), np.asarray(nib.load(tmp_path / "clean" / name).dataobj))


# --------------------------------------------------------------------------- unwritable or full outputs


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_train_into_an_unwritable_folder_fails_before_the_first_epoch(tmp_path, capsys, monkeypatch):
    config_path = write_run_config(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # root ignores permission bits: a path below a FILE cannot be written
    code = main(["train", str(config_path), "--output", str(blocker / "run"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"{blocker / 'run'}: cannot write the output folder" in err
    assert not (tmp_path / "cache").exists(), "the cache was prepared before the output was checked"

    train, val = memory_cases()
    config = tiny_config("tct", epochs=2)
    monkeypatch.setattr(Trainer, "train_epoch", lambda *a: pytest.fail("an epoch ran"))
    with pytest.raises(OutputError, match="run: cannot write the output folder .*No space left"):
        monkeypatch.setattr(pathlib.Path, "write_bytes", _disk_full)  # the write probe
        Trainer(config, tmp_path / "run", device="cpu", train_cases=train, val_cases=val, progress=False)


def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import tctseg.checkpoint as checkpoint_module

    train, val = memory_cases()
    trainer = Trainer(tiny_config("tct", epochs=3), tmp_path / "run", device="cpu", train_cases=train,
                      val_cases=val, progress=False)
    real_save = torch.save
    calls = []

    def save_then_fill_the_disk(state, path):
        calls.append(path)
        if len(calls) > 2:  # epoch 1's last + best succeed; epoch 2 finds the disk full mid-write
            Path(path).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(state, path)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_then_fill_the_disk)
    with pytest.raises(CheckpointError, match="checkpoint_last.pt: cannot write checkpoint .No space left"):
        trainer.fit()
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["epoch"] == 1
    assert sorted(p.name for p in (tmp_path / "run").glob(".*tmp*")) == []


def test_predict_into_an_unwritable_or_full_folder_fails_before_any_case(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    from tctseg.inference import predict as predict_module

    scans = _write_scans(tmp_path / "scans", 2, shape=(24, 24, 12))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["predict", str(tiny_checkpoint), str(scans), str(blocker / "out"), "--modality", "CT", "--no-progress"]) == 2
    assert f"{blocker / 'out'}: cannot write the output folder" in capsys.readouterr().err

    ran = []
    monkeypatch.setattr(predict_module, "sliding_window_probabilities", lambda *a, **k: ran.append(1))
    monkeypatch.setattr(pathlib.Path, "write_bytes", _disk_full)
    with pytest.raises(OutputError, match="out2: cannot write the output folder .No space left"):
        predict_module.predict_cases(tiny_checkpoint, [scans], tmp_path / "out2", modality="CT", progress=False)
    assert ran == []


def test_disk_full_mid_predict_stops_with_no_partial_output(tmp_path, tiny_checkpoint, monkeypatch):
    from tctseg.inference import predict_cases

    scans = _write_scans(tmp_path / "scans", 2, shape=(24, 24, 12))

    def half_then_full(self, stream):
        stream.write(b"\x00" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(nib.Nifti1Image, "to_stream", half_then_full)
    with pytest.raises(OutputError, match="scan0.nii.gz: cannot write the NIfTI file .No space left"):
        predict_cases(tiny_checkpoint, [scans], tmp_path / "out", modality="CT", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["index.json"]


def test_prepare_into_an_unwritable_or_full_cache_fails_clearly_and_keeps_prepared_cases(tmp_path, monkeypatch, capsys):
    from tctseg.preprocessing.cache import cache_root, prepare

    config_path = write_run_config(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["prepare", str(config_path), "--set", f"cache_dir={blocker / 'cache'}", "--quiet"]) == 2
    assert f"{blocker / 'cache'}" in capsys.readouterr().err

    config = load_config(config_path)
    prepare(config, progress=False, workers=1)
    before = {p: _sha(p) for p in cache_root(config).rglob("*") if p.is_file()}
    source = tmp_path / "raw" / "imagesTr" / "case_001_0000.nii.gz"
    os.utime(source, (1, 1))  # a changed source: case_001 is prepared again ...
    monkeypatch.setattr(np, "save", _disk_full)  # ... onto a full disk
    with pytest.raises(OutputError, match=r"case_001\.partial-\d+: cannot write the prepared case .No space left"):
        prepare(config, progress=False, workers=1)
    monkeypatch.undo()
    assert {p: _sha(p) for p in cache_root(config).rglob("*") if p.is_file()} == before
    assert not list(cache_root(config).rglob("*.partial-*"))


def test_evaluate_into_an_unwritable_or_full_folder_fails_before_evaluating(tmp_path, monkeypatch, capsys):
    import tctseg.evaluation.evaluate as evaluate_module

    folder = tmp_path / "gt"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), folder / "a.nii.gz")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    calls = []
    monkeypatch.setattr(evaluate_module, "evaluate_folders", lambda *a, **k: calls.append(1))
    assert main(["evaluate", str(folder), str(folder), "--classes", "liver", "--out", str(blocker / "m")]) == 2
    assert f"--out {blocker / 'm'}: cannot write the metrics folder" in capsys.readouterr().err
    monkeypatch.setattr(pathlib.Path, "write_bytes", _disk_full)
    assert main(["evaluate", str(folder), str(folder), "--classes", "liver", "--out", str(tmp_path / "m")]) == 2
    assert "No space left" in capsys.readouterr().err
    assert calls == []


# --------------------------------------------------------------------------- checkpoints


def test_resume_with_other_classes_or_preprocessing_is_refused_saying_what_differs(tmp_path, capsys):
    config_path = write_run_config(tmp_path)
    train, val = memory_cases()
    run = tmp_path / "run"
    with interrupted_after_epochs(1):
        Trainer(load_config(config_path), run, device="cpu", train_cases=train, val_cases=val, progress=False).fit()
    base = ["train", str(config_path), "--output", str(run), "--resume", "--no-prepare", "--device", "cpu", "--no-progress"]

    assert main(base + ["--set", "preprocessing.spacing=[1.0,1.0,2.0]"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint_last.pt: checkpoint was trained with other preprocessing settings" in err
    assert "preprocessing.spacing: checkpoint [1.0, 1.0, 1.0], config [1.0, 1.0, 2.0]" in err
    assert main(base + ["--set", "classes=[liver,spleen,pancreas]"]) == 2
    assert "trained for classes ['liver', 'spleen'], but the config has classes ['liver', 'spleen', 'pancreas']" in capsys.readouterr().err


def test_predict_refuses_a_checkpoint_whose_records_disagree(tmp_path, tiny_checkpoint, capsys):
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["classes"] = ["liver", "kidney"]
    edited = tmp_path / "edited.pt"
    torch.save(state, edited)
    scans = _write_scans(tmp_path / "scans", 1, shape=(24, 24, 12))
    assert main(["predict", str(edited), str(scans), str(tmp_path / "out"), "--modality", "CT"]) == 2
    err = capsys.readouterr().err
    assert "edited.pt: checkpoint was trained for classes ['liver', 'kidney'], but the config has classes ['liver', 'spleen']" in err
    assert not (tmp_path / "out").exists()


class _Payload:
    """Unpickling it would run ``open(marker, 'w')``: code execution from a checkpoint file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("as_zip", [True, False])
def test_a_checkpoint_with_code_in_it_is_refused_and_the_code_never_runs(tmp_path, tiny_checkpoint, capsys, as_zip):
    import pickle

    marker = tmp_path / "marker"
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["epoch"] = _Payload(marker)
    evil = tmp_path / "evil.pt"
    if as_zip:
        torch.save(state, evil)
    else:
        evil.write_bytes(pickle.dumps(state))
    with pytest.raises(CheckpointError, match="evil.pt: refused: a checkpoint may hold only weights and plain data, never code"):
        load_checkpoint(evil)
    assert main(["predict", str(evil), str(_scan_folder(tmp_path)), str(tmp_path / "out"), "--modality", "CT"]) == 2
    assert "evil.pt: refused" in capsys.readouterr().err
    assert not marker.exists()


def test_resume_from_a_checkpoint_without_rng_state_is_refused(tmp_path):
    train, val = memory_cases()
    config = tiny_config("tct", epochs=2)
    kwargs = dict(device="cpu", train_cases=train, val_cases=val, progress=False)
    with interrupted_after_epochs(1):
        Trainer(config, tmp_path / "run", **kwargs).fit()
    path = tmp_path / "run" / "checkpoint_last.pt"
    state = torch.load(path, weights_only=True)
    del state["rng"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"checkpoint_last.pt: cannot resume from it \(KeyError: 'rng'\)"):
        Trainer(config, tmp_path / "run", resume=True, **kwargs)


# --------------------------------------------------------------------------- full disk for every run file (issue 19)


def _fill_the_disk_on(target: str, monkeypatch) -> str:
    """Make the writer of one run file fail with ENOSPC; returns the file's name in the message."""
    import csv as csv_module

    import matplotlib.figure
    from torch.utils.tensorboard.writer import FileWriter

    if target == "log.csv":
        monkeypatch.setattr(csv_module.DictWriter, "writeheader", _disk_full)
        return "log.csv: cannot write the training log"
    if target == "progress.png":
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _disk_full)
        return "progress.png: cannot write the progress plot"
    monkeypatch.setattr(FileWriter, "flush", _disk_full)
    return "tensorboard: cannot write TensorBoard events"


@pytest.mark.parametrize("target", ["log.csv", "progress.png", "tensorboard"])
def test_disk_full_on_a_log_file_stops_training_with_one_line_and_the_checkpoint_usable(tmp_path, monkeypatch, target):
    train, val = memory_cases()
    trainer = Trainer(tiny_config("tct", epochs=3), tmp_path / "run", device="cpu", train_cases=train,
                      val_cases=val, progress=False)
    expected = _fill_the_disk_on(target, monkeypatch)
    with pytest.raises(OutputError) as caught:
        trainer.fit()
    monkeypatch.undo()
    message = str(caught.value)
    assert expected in message and "No space left" in message and "\n" not in message, message
    assert load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["epoch"] == 1  # saved before the logs
    assert not [p.name for p in (tmp_path / "run").iterdir() if ".tmp-" in p.name]


def test_disk_full_while_writing_a_report_is_one_line_and_keeps_the_earlier_report(tmp_path, monkeypatch, capsys):
    train, val = memory_cases()
    run = tmp_path / "run"
    Trainer(tiny_config("tct", epochs=1), run, device="cpu", train_cases=train, val_cases=val, progress=False).fit()
    assert main(["report", str(run)]) == 0
    earlier = _sha(run / "report.html")
    monkeypatch.setattr(pathlib.Path, "write_text", _disk_full)
    code = main(["report", str(run)])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 2 and f"tctseg report: error: {run / 'report.html'}: cannot write the report (No space left" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _sha(run / "report.html") == earlier
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]


# --------------------------------------------------------------------------- checkpoints that are not (issue 19)


def _zip_bomb(tiny_checkpoint: Path, path: Path, pickle_bytes: int) -> Path:
    """The real checkpoint's archive with its pickle replaced by ``pickle_bytes`` deflated zero bytes."""
    import zipfile

    chunk = b"\x00" * 2**22
    with zipfile.ZipFile(tiny_checkpoint) as real, \
            zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as bomb:
        for member in real.infolist():
            if member.filename.endswith("data.pkl"):
                with bomb.open(member.filename, "w", force_zip64=True) as stream:
                    for _ in range(pickle_bytes // len(chunk)):
                        stream.write(chunk)
            else:
                bomb.writestr(member, real.read(member), compress_type=zipfile.ZIP_STORED)
    return path


def _scan_folder(tmp_path: Path) -> Path:
    """A predict INPUT holding one small scan only (predict names other files it finds in INPUT
    on a warning line, which would add to the one error line these tests expect)."""
    scans = tmp_path / "scans"
    scans.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 4), dtype=np.float32), np.eye(4)), scans / "a.nii.gz")
    return scans


def test_a_zip_bomb_checkpoint_is_refused_from_its_directory(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    """512 MB of pickle in a ~0.5 MB file (the issue's was 1.6 GB in 1.8 MB): refused before any byte
    is decompressed."""
    import tctseg.checkpoint as checkpoint_module

    bomb = _zip_bomb(tiny_checkpoint, tmp_path / "bomb.pt", 512 * 2**20)
    assert bomb.stat().st_size < 4 * 2**20
    decompressed = []
    real_load = checkpoint_module.torch.load
    monkeypatch.setattr(checkpoint_module.torch, "load", lambda *a, **k: decompressed.append(1) or real_load(*a, **k))
    with pytest.raises(CheckpointError, match=r"bomb.pt: refused: archive member .*data.pkl would expand from \d+ to "
                                              r"536870912 bytes"):
        load_checkpoint(bomb)
    assert decompressed == []  # torch.load never saw it
    assert main(["predict", str(bomb), str(_scan_folder(tmp_path)), str(tmp_path / "out"), "--modality", "CT"]) == 2
    err = capsys.readouterr().err
    assert "bomb.pt: refused: archive member" in err and len(err.strip().splitlines()) == 1


def test_an_oversized_stored_pickle_is_refused(tmp_path, tiny_checkpoint):
    """A pickle member stored uncompressed but larger than any checkpoint's plain data (65 MB)."""
    import zipfile

    big = tmp_path / "big.pt"
    with zipfile.ZipFile(tiny_checkpoint) as real, zipfile.ZipFile(big, "w") as out:
        for member in real.infolist():
            data = b"\x00" * (65 * 2**20) if member.filename.endswith("data.pkl") else real.read(member)
            out.writestr(member, data, compress_type=zipfile.ZIP_STORED)
    with pytest.raises(CheckpointError, match=r"big.pt: refused: its pickle .*data.pkl is 68157440 bytes"):
        load_checkpoint(big)


def _nifti_bytes(gz: bool) -> bytes:
    image = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    raw = image.to_bytes()
    return __import__("gzip").compress(raw) if gz else raw


@pytest.mark.parametrize("content,kind", [
    (lambda: _nifti_bytes(True), "a gzip-compressed NIfTI image"),
    (lambda: _nifti_bytes(False), "a NIfTI image"),
    (lambda: b"\x00" * 128 + b"DICM" + b"\x00" * 200, "a DICOM file"),
    (lambda: b"\x93NUMPY\x01\x00", "a NumPy array file (.npy)"),
    (lambda: b"classes: [liver]\n", "a text file"),
    (lambda: b"", "an empty file"),
    (lambda: b"\x1f\x8b\x08\x00 cut short", "a gzip-compressed file (damaged)"),
])
def test_a_file_that_is_not_a_checkpoint_is_named_for_what_it_is(tmp_path, capsys, content, kind):
    path = tmp_path / "model.pt"
    path.write_bytes(content())
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == f"{path}: not a tctseg checkpoint: {kind}"
    assert main(["predict", str(path), str(_scan_folder(tmp_path)), str(tmp_path / "out"), "--modality", "CT"]) == 2
    assert capsys.readouterr().err.strip() == f"tctseg predict: error: {path}: not a tctseg checkpoint: {kind}"


# --------------------------------------------------------------------------- one process per folder (issue 19)


def _holds_lock(folder: Path) -> bool:
    lock = folder / ".tctseg-lock"
    return lock.is_file() and lock.read_text(errors="replace").startswith("pid ")


def _one_error_line(result: subprocess.CompletedProcess, command: str) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"tctseg {command}: error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return errors[0]


def _lock_holder(folder: Path, seconds: float = 300) -> list[str]:
    """A separate process that takes tctseg's lock on ``folder`` and keeps it ``seconds`` (or until killed)."""
    code = ("import sys, time; from tctseg.files.locking import folder_lock\n"
            "with folder_lock(sys.argv[1], 'test holder'):\n    time.sleep(float(sys.argv[2]))")
    return [sys.executable, "-c", code, str(folder), str(seconds)]


@pytest.mark.slow
def test_a_second_train_on_a_running_runs_folder_is_refused_naming_the_holder(tmp_path):
    config_path = write_run_config(tmp_path, epochs=200, iterations_per_epoch=50)
    run = tmp_path / "run"
    first = _tctseg("train", config_path, "--output", run, "--device", "cpu", "--no-progress")
    with running(first, lambda: _holds_lock(run) and (run / "config.yaml").exists(), ENV) as proc:
        for flag in ("--resume", "--overwrite"):
            second = subprocess.run(first + [flag], env=ENV, capture_output=True, text=True, timeout=120)
            line = _one_error_line(second, "train")
            assert f"{run}: in use by another tctseg process (pid {proc.pid}: training run" in line, line
        assert proc.poll() is None
    # the first run was SIGKILLed holding the lock: the kernel released it, nothing stale is left
    from tctseg.files.locking import folder_lock

    with folder_lock(run, "test"):
        pass
    assert (run / "config.yaml").exists() and not list(run.glob("*.tmp-*"))


@pytest.mark.parametrize("command", ["prepare", "predict"])
def test_a_second_prepare_or_predict_on_a_locked_folder_is_refused_naming_the_holder(tmp_path, tiny_checkpoint, command):
    from tctseg.preprocessing.cache import cache_root

    config_path = write_run_config(tmp_path)
    if command == "prepare":
        folder = cache_root(load_config(config_path))
        argv = _tctseg("prepare", config_path, "--quiet")
    else:
        scans = _write_scans(tmp_path / "scans", 1, shape=(24, 24, 12))
        folder = tmp_path / "out"
        argv = _tctseg("predict", tiny_checkpoint, scans, folder, "--modality", "CT", "--no-progress")
    with running(_lock_holder(folder), lambda: _holds_lock(folder), ENV) as holder:
        refused = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=120)
        line = _one_error_line(refused, command)
        assert f"{folder}: in use by another tctseg process (pid {holder.pid}: test holder" in line, line
    assert not [p for p in folder.iterdir() if not p.name.startswith(".")], "the refused process wrote into the folder"
    finished = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=300)  # holder killed: no stale lock
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert not (folder / ".tctseg-lock").exists()  # a clean exit removes the lock file


def test_a_training_waits_for_the_prepare_holding_its_cache_instead_of_failing(tmp_path, capsys):
    """``prepare(wait_for_lock=True)``, what train and run use: says whom it waits for, then prepares."""
    from tctseg.preprocessing.cache import cache_root, prepare

    config = load_config(write_run_config(tmp_path))
    folder = cache_root(config)
    holder = subprocess.Popen(_lock_holder(folder, seconds=3), env=ENV)
    try:
        while not _holds_lock(folder):
            assert holder.poll() is None
        cases = prepare(config, roles=("train", "validation"), progress=False, workers=1, wait_for_lock=True)
        assert holder.poll() is not None, "prepare ran while another process held the cache"
    finally:
        holder.kill()
        holder.wait()
    assert len(cases) == 3
    assert f"{folder}: in use by another tctseg process (pid {holder.pid}: test holder" in capsys.readouterr().err
    assert not (folder / ".tctseg-lock").exists()


# --------------------------------------------------------------------------- issue 31, items 8 and 9


LONG = "n" * 300  # one name over the 255 bytes Linux (and most file systems) allow


def _scan_values() -> np.ndarray:
    return phantom_volume(0)[0] * 300.0  # a CT-like scan with something in it


def _error_lines(err: str, command: str) -> list[str]:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"tctseg {command}: error: "), err
    return lines


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    from tctseg.checkpoint import save_checkpoint
    from tctseg.methods import build_method

    config = tiny_config("tct")
    return save_checkpoint({"model": build_method(config).state_dict(), "config": config.to_dict(),
                            "classes": config.classes, "epoch": 0}, tmp_path / "model.pt")


def test_a_path_too_long_to_exist_is_one_line_before_anything_is_written(tmp_path, capsys, tiny_checkpoint):
    """ENAMETOOLONG (issue 31, item 8) as predict's OUTPUT or INPUT, train's --output or the
    config's output_dir, report's RUN_DIR and evaluate's --out: exit 2, one line naming the path."""
    config = write_run_config(tmp_path)
    scans = tmp_path / "scans"
    scans.mkdir()
    nib.save(nib.Nifti1Image(_scan_values(), np.eye(4)), scans / "a.nii.gz")
    long = tmp_path / LONG
    cases = {
        "predict-output": ["predict", str(tiny_checkpoint), str(scans), str(long / "out"), "--modality", "CT", "--no-progress"],
        "predict-input": ["predict", str(tiny_checkpoint), str(long), str(tmp_path / "out"), "--modality", "CT", "--no-progress"],
        "train-output": ["train", str(config), "--output", str(long), "--no-progress"],
        "report": ["report", str(long)],
        "evaluate": ["evaluate", str(scans), str(scans), "--classes", "a,b", "--out", str(long), "--no-progress"],
    }
    for name, argv in cases.items():
        before = sorted(p.name for p in tmp_path.iterdir())
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (name, err)
        line = _error_lines(err, argv[0])[0]
        assert str(long) in line and ": a file or folder name in it is 300 bytes long, over the 255 the file system allows" in line, name
        assert sorted(p.name for p in tmp_path.iterdir()) == before, name  # nothing created
    # a run folder made from the config's output_dir: the same line, from the file system's own error
    code = main(["train", str(config), "--set", f"output_dir={long}", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and LONG in _error_lines(err, "train")[0], err


@pytest.mark.parametrize("special", ["fifo", "/dev/null"])
def test_a_fifo_or_a_device_as_input_is_one_line(tmp_path, capsys, tiny_checkpoint, special):
    """find_cases listed a FIFO or /dev/null as a folder: NotADirectoryError (issue 31, item 8)."""
    if special == "fifo":
        special = tmp_path / "fifo"
        os.mkfifo(special)
    code = main(["predict", str(tiny_checkpoint), str(special), str(tmp_path / "out"), "--modality", "CT", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    kind = "a FIFO (named pipe)" if special != "/dev/null" else "a character device"
    assert _error_lines(err, "predict")[0] == (
        f"tctseg predict: error: {special}: is {kind}, not a NIfTI file, a folder of scans or a DICOM series folder")
    assert not (tmp_path / "out").exists()


def _read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


def test_a_failed_clean_up_does_not_hide_the_one_line_error(tmp_path, monkeypatch):
    """On a read-only file system removing the temporary file fails too (EROFS, even for a file
    that was never created); that second error hid the OutputError (issue 31, item 9)."""
    import tctseg.checkpoint as checkpoint_module
    from tctseg.checkpoint import save_checkpoint
    from tctseg.files.outputs import write_atomically

    monkeypatch.setattr(pathlib.Path, "unlink", _read_only)
    with pytest.raises(OutputError, match=r"a\.json: cannot write the file \(Read-only file system\)"):
        write_atomically(tmp_path / "a.json", _read_only)
    monkeypatch.setattr(checkpoint_module.torch, "save", _read_only)
    with pytest.raises(CheckpointError, match=r"last\.pt: cannot write checkpoint \(Read-only file system\)"):
        save_checkpoint({"epoch": 1}, tmp_path / "last.pt")
    # and a name too long to create: OutputError, not the clean-up's OSError
    monkeypatch.undo()
    with pytest.raises(OutputError, match="File name too long: names may have at most 255 bytes"):
        write_atomically(tmp_path / f"{LONG}.json", lambda tmp: tmp.write_text("x"))


def test_temporary_names_are_short_deterministic_and_beside_the_file():
    from tctseg.files.outputs import NAME_MAX, temporary_path

    final = Path("/out") / ("s" * 243 + ".nii.gz")  # a legal 250-byte name
    tmp = temporary_path(final)
    assert tmp.parent == final.parent and len(tmp.name.encode()) <= NAME_MAX
    assert tmp == temporary_path(final) and tmp != temporary_path(final.with_name("t" * 243 + ".nii.gz"))
    assert ".tmp-" in tmp.name and tmp.name.endswith(".gz") and not tmp.name.endswith(".nii.gz")
    assert not temporary_path(Path("run") / ("c" * 250 + ".pt"), keep_suffix=False).name.endswith(".pt")
    assert temporary_path(Path("out/a.nii.gz")).name == f".a.nii.gz.tmp-{os.getpid()}.gz"  # short names as before


def test_a_scan_named_with_243_characters_is_predicted_byte_for_byte_alike(tmp_path, capsys, tiny_checkpoint):
    """Its temporary name was 264 bytes: the case could never be written (issue 31, item 9)."""
    scans = tmp_path / "scans"
    scans.mkdir()
    name = "s" * 243
    nib.save(nib.Nifti1Image(_scan_values(), np.eye(4)), scans / f"{name}.nii.gz")
    for out in ("out1", "out2"):
        assert main(["predict", str(tiny_checkpoint), str(scans), str(tmp_path / out), "--modality", "CT",
                     "--no-progress"]) == 0, capsys.readouterr()
        assert "1 written" in capsys.readouterr().out
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == ["index.json", f"{name}.nii.gz"]
    assert _sha(tmp_path / "out1" / f"{name}.nii.gz") == _sha(tmp_path / "out2" / f"{name}.nii.gz")


@pytest.fixture
def read_only_mount(tmp_path):
    """A tmpfs at tmp_path/ro: ``make_read_only()`` remounts it read-only (root only; skipped elsewhere)."""
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount_point)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount_point, lambda: subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_report_and_predict_on_a_read_only_file_system_are_one_line(read_only_mount, capsys, tiny_checkpoint, tmp_path):
    """A real read-only mount (issue 31, item 9): report checks that the run folder is writable
    before it reads or draws anything; predict's output folder the same; nothing changes."""
    mount_point, make_read_only = read_only_mount
    train, val = memory_cases()
    run = mount_point / "run"
    Trainer(tiny_config("tct", epochs=1), run, device="cpu", train_cases=train, val_cases=val, progress=False).fit()
    scans = tmp_path / "scans"
    scans.mkdir()
    nib.save(nib.Nifti1Image(_scan_values(), np.eye(4)), scans / "a.nii.gz")
    (mount_point / "out").mkdir()
    make_read_only()
    before = {p: _sha(p) for p in mount_point.rglob("*") if p.is_file()}
    assert main(["report", str(run)]) == 2
    assert _error_lines(capsys.readouterr().err, "report")[0] == (
        f"tctseg report: error: {run / 'report.html'}: cannot write the report (Read-only file system)")
    assert main(["predict", str(tiny_checkpoint), str(scans), str(mount_point / "out"), "--modality", "CT",
                 "--no-progress"]) == 2
    assert _error_lines(capsys.readouterr().err, "predict")[0] == (
        f"tctseg predict: error: {mount_point / 'out'}: cannot write the output folder (Read-only file system)")
    assert {p: _sha(p) for p in mount_point.rglob("*") if p.is_file()} == before


def test_an_internal_error_has_its_own_exit_status(monkeypatch, capsys):
    """A bug (not the user's input) exits 3 with its traceback and one line saying so; 1 stays
    'some cases failed' (issue 31, smaller). An OSError about the user's file system is exit 2."""
    import tctseg.commands.report as report_command

    def bug(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(report_command, "run", bug)
    assert main(["report", "somewhere"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err
    assert err.strip().splitlines()[-1].startswith("tctseg report: internal error: ZeroDivisionError: division by zero")
    with pytest.raises(ZeroDivisionError):
        main(["report", "somewhere", "--debug"])

    def read_only(args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "run/report.html")

    monkeypatch.setattr(report_command, "run", read_only)
    assert main(["report", "somewhere"]) == 2
    assert _error_lines(capsys.readouterr().err, "report")[0] == (
        "tctseg report: error: run/report.html: Read-only file system")
