"""No command deletes or overwrites a user's files (issue 31, items 1–4): each case runs the
real ``tctseg`` in a subprocess and hashes every file of the user's folder before and after.

1. A dataset ``name`` or class name that is a path (``/data/kits19``, ``../../x``) is refused
   when the config is read; ``prepare`` refuses a cache folder that is, holds or lies inside a
   dataset's raw folder.
2. ``train DIR/config.yaml --output DIR`` never writes over the config it was given, and a
   folder's own config.yaml makes it "another run".
3. ``phantom --overwrite`` replaces only a folder its marker says it wrote, and only its files.
4. ``predict`` skips or overwrites only files its output folder's index.json lists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from _training_data import write_run_config

from tctseg.cli import main
from tctseg.config import PreprocessingConfig
from tctseg.data.phantom import write_phantom
from tctseg.methods import build_method
from tctseg.preprocessing.cache import fingerprint

from test_predict import save_checkpoint_of, tiny_config, write_volume

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
CLASSES = ["liver", "spleen", "left_kidney", "right_kidney", "pancreas"]


def tctseg(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tctseg", *map(str, args)], env=ENV, capture_output=True, text=True,
                          timeout=300)


def one_error_line(result: subprocess.CompletedProcess, command: str) -> str:
    """The one ``tctseg <command>: error: ...`` line of a run that exited 2 without a traceback."""
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"tctseg {command}: error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return errors[0]


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (hidden ones too), by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write_kits19(folder: Path, cases: int = 2) -> Path:
    """A small KiTS19-layout folder (``case_XXXXX/imaging.nii.gz``, ``segmentation.nii.gz``)."""
    for i in range(cases):
        case = folder / f"case_{i:05d}"
        case.mkdir(parents=True)
        image = np.random.default_rng(i).normal(0, 300, (12, 16, 16)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.diag([3.0, 1.0, 1.0, 1.0])), case / "imaging.nii.gz")
        nib.save(nib.Nifti1Image((image > 200).astype(np.uint8), np.diag([3.0, 1.0, 1.0, 1.0])), case / "segmentation.nii.gz")
    return folder


def write_config(path: Path, **raw) -> Path:
    path.write_text(yaml.safe_dump({"classes": CLASSES, **raw}, sort_keys=False))
    return path


# --------------------------------------------------------------------------- 1. names that are paths


def test_a_dataset_named_like_its_raw_folder_is_refused_and_the_scans_are_kept(tmp_path):
    """issue 31: `name: /data/kits19` made prepare use the raw folder as its cache: scans deleted."""
    raw = write_kits19(tmp_path / "data" / "kits19")
    before = hashes(tmp_path / "data")
    config = write_config(tmp_path / "config.yaml", cache_dir=str(tmp_path / "cache"),
                          datasets=[{"name": str(raw), "format": "kits19", "path": str(raw)}])
    line = one_error_line(tctseg("prepare", config, "--quiet"), "prepare")
    assert line == (f"tctseg prepare: error: {config}: datasets.0.name: dataset name {str(raw)!r} is not a plain name "
                    "(letters, digits, '_', '.', '-', starting with a letter or digit, no '..'); it becomes a folder "
                    "name, never a path")
    assert hashes(tmp_path / "data") == before
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("change, key", [
    ({"datasets": [{"name": "../../x", "format": "kits19", "path": "RAW"}]}, "datasets.0.name"),
    ({"datasets": [{"name": "ok", "format": "kits19", "path": "RAW", "optional": True},
                   {"name": "a/b", "format": "kits19", "path": "RAW"}]}, "datasets.1.name"),
    ({"classes": [*CLASSES, "../../../../x"], "datasets": [{"name": "k", "format": "kits19", "path": "RAW"}]}, "classes.5"),
    ({"datasets": [{"name": "k", "format": "nnunet", "path": "RAW", "label_map": {1: "liver", 2: "..\\x"}}]},
     "datasets.0.label_map.2"),
], ids=["dataset-up", "dataset-slash", "class-up", "label-map"])
def test_names_that_would_leave_their_folder_are_refused_with_one_line_naming_the_key(tmp_path, change, key):
    """A name `../../x` wrote outside cache_dir; a class `../../../../x` sent PFL's stage 1 outside the run."""
    raw = write_kits19(tmp_path / "work" / "raw")
    change = json.loads(json.dumps(change).replace('"RAW"', json.dumps(str(raw))))
    config = write_config(tmp_path / "work" / "config.yaml", cache_dir=str(tmp_path / "work" / "cache"),
                          output_dir=str(tmp_path / "work" / "runs"), method={"name": "pfl"}, **change)
    before = hashes(tmp_path)
    for command in (["prepare", config, "--quiet"], ["train", config, "--no-progress", "--device", "cpu"]):
        line = one_error_line(tctseg(*command), command[0])
        assert line.startswith(f"tctseg {command[0]}: error: {config}: {key}: ") and "is not a plain name" in line, line
    assert hashes(tmp_path) == before  # nothing written anywhere, outside the folders least of all
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["config.yaml", "raw"]


def test_prepare_refuses_a_cache_folder_that_is_holds_or_lies_in_a_raw_folder(tmp_path):
    """Defence in depth: plain names, but cache_dir put where the raw scans are."""
    fp = fingerprint(PreprocessingConfig())
    cache = tmp_path / "cache"
    cases = {
        # the cache folder of `kits19` is the raw folder itself
        "is": (cache, cache / fp / "kits19", "kits19"),
        # cache_dir inside the raw folder
        "lies inside": (tmp_path / "raw2" / "cache", tmp_path / "raw2", "kits19"),
        # the raw folder inside the cache folder of `kits19`
        "holds": (cache, cache / fp / "kits19" / "data", "kits19"),
    }
    for where, (cache_dir, raw, name) in cases.items():
        write_kits19(raw)
        before = hashes(tmp_path)
        config = write_config(tmp_path / f"{where}.yaml", cache_dir=str(cache_dir),
                              datasets=[{"name": name, "format": "kits19", "path": str(raw)}])
        before[config.name] = hashes(tmp_path)[config.name]
        line = one_error_line(tctseg("prepare", config, "--quiet"), "prepare")
        assert f"the cache folder of dataset {name!r} {where} the raw data folder of dataset {name!r} ({raw})" in line, line
        assert "choose another cache_dir" in line
        assert hashes(tmp_path) == before, where
        for path in raw.rglob("*"):
            assert not path.name.endswith(".npy") and "partial" not in path.name
        for case in raw.glob("case_*"):
            shutil.rmtree(case)


# --------------------------------------------------------------------------- 2. the config given to train


def test_train_never_writes_over_the_config_it_was_given(tmp_path):
    """issue 31: `train DIR/config.yaml --output DIR` replaced the user's file (comments, ${VAR}s) with a dump."""
    template = write_run_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    mine = run / "config.yaml"
    mine.write_text("# my experiment: comments and placeholders a dump would lose\n"
                    + template.read_text().replace(str(tmp_path / "cache"), "${MY_CACHE:-" + str(tmp_path / "cache") + "}"))
    before = hashes(tmp_path)
    for flags in ([], ["--resume"], ["--overwrite"]):
        line = one_error_line(tctseg("train", mine, "--output", run, "--device", "cpu", "--no-progress", *flags), "train")
        assert line == (f"tctseg train: error: {mine}: is {mine}, which this run writes; train from a copy of it kept "
                        "outside the run folder, or choose another --output"), line
        assert hashes(tmp_path) == before, flags
    # the default run folder (output_dir/<method>) is the config's folder: the same refusal
    raw = yaml.safe_load(template.read_text())
    raw["output_dir"] = str(tmp_path / "runs")
    default = tmp_path / "runs" / "tct" / "config.yaml"
    default.parent.mkdir(parents=True)
    default.write_text(yaml.safe_dump(raw))
    for command in ("train", "run"):
        extra = ["--methods", "tct"] if command == "run" else []
        line = one_error_line(tctseg(command, default, *extra, "--device", "cpu", "--no-progress"), command)
        assert f"{default}: is {default}, which this run writes" in line, line
    # a file inside a folder the run writes into (a PFL stage's own config.yaml) is refused too
    stage = run / "stage1" / "liver" / "config.yaml"
    stage.parent.mkdir(parents=True)
    stage.write_text(template.read_text())
    line = one_error_line(tctseg("train", stage, "--output", run, "--method", "pfl", "--overwrite", "--no-progress"), "train")
    assert f"{stage}: lies inside {run / 'stage1'}, which this run writes" in line, line
    assert mine.read_text().startswith("# my experiment") and stage.read_text() == template.read_text()


def test_a_folder_holding_a_config_yaml_is_another_run_and_a_link_to_the_config_is_refused(tmp_path):
    config = write_run_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("# the config.yaml of an earlier run, or the user's\nclasses: [liver]\n")
    before = hashes(tmp_path)
    line = one_error_line(tctseg("train", config, "--output", run, "--device", "cpu", "--no-progress"), "train")
    assert line == (f"tctseg train: error: {run}: holds another run (config.yaml); pass --resume to continue it or "
                    "--overwrite to start again"), line
    assert hashes(tmp_path) == before
    # run/config.yaml a link to the config given: refused even with --resume (it would be written through)
    (run / "config.yaml").unlink()
    (run / "config.yaml").symlink_to(config)
    before = hashes(tmp_path)
    line = one_error_line(tctseg("train", config, "--output", run, "--resume", "--no-progress"), "train")
    assert f"{config}: is {run / 'config.yaml'}, which this run writes" in line, line
    assert hashes(tmp_path) == before


# --------------------------------------------------------------------------- 3. phantom --overwrite


def test_phantom_overwrite_never_touches_a_folder_it_did_not_write(tmp_path):
    """issue 31: `phantom DIR` advised --overwrite, which deleted the user's Task03_Liver scans and README.md."""
    mine = tmp_path / "mine"
    (mine / "Task03_Liver" / "imagesTr").mkdir(parents=True)
    (mine / "Task03_Liver" / "imagesTr" / "liver_0.nii.gz").write_bytes(b"my real scan")
    (mine / "README.md").write_text("my notes")
    before = hashes(mine)
    for flags in ([], ["--overwrite"]):
        line = one_error_line(tctseg("phantom", mine, "--size", "tiny", *flags), "phantom")
        assert line == (f"tctseg phantom: error: {mine}: folder is not empty and holds no phantom tctseg wrote (no "
                        ".tctseg-phantom.json); choose an empty or new folder (--overwrite replaces only a phantom "
                        "tctseg wrote)"), line
        assert hashes(mine) == before

    # a phantom folder: its marker lists what it wrote; a file it did not write stops --overwrite
    ours = tmp_path / "phantom"
    write_phantom(ours, size="tiny", seed=0)
    assert (ours / ".tctseg-phantom.json").is_file()
    line = one_error_line(tctseg("phantom", ours, "--size", "tiny"), "phantom")
    assert line == f"tctseg phantom: error: {ours}: holds a phantom already; pass --overwrite to replace it"
    added = ours / "Task03_Liver" / "imagesTr" / "my_scan.nii.gz"
    added.write_bytes(b"my real scan")
    (ours / "notes.md").write_text("mine, beside the phantom")
    before = hashes(ours)
    line = one_error_line(tctseg("phantom", ours, "--size", "tiny", "--seed", "1", "--overwrite"), "phantom")
    assert line == (f"tctseg phantom: error: {ours}: Task03_Liver/imagesTr/my_scan.nii.gz is not a file the phantom "
                    "there wrote; move it out of the folder, or choose an empty or new folder"), line
    assert hashes(ours) == before
    # moved out: --overwrite replaces the phantom's own files and leaves the user's others alone
    added.unlink()
    write_phantom(ours, size="tiny", seed=1, overwrite=True)
    after = hashes(ours)
    assert after["notes.md"] == before["notes.md"]
    assert after["Task03_Liver/imagesTr/liver_0.nii.gz"] != before["Task03_Liver/imagesTr/liver_0.nii.gz"]  # seed 1


# --------------------------------------------------------------------------- 4. predict's output folder


@pytest.fixture
def model(tmp_path) -> Path:
    config = tiny_config(spacing=[4.0, 4.0, 8.0])
    torch.manual_seed(0)
    return save_checkpoint_of(build_method(config), config, tmp_path / "model.pt")


def test_predict_into_a_folder_of_ground_truths_is_refused_and_they_are_kept(tmp_path, model):
    """issue 31: `predict MODEL m/imagesTr m/labelsTr` took the labels for finished predictions
    ("2 skipped") and listed them in index.json; --overwrite wrote predictions over them."""
    msd = tmp_path / "m"
    (msd / "imagesTr").mkdir(parents=True)
    (msd / "labelsTr").mkdir()
    for i in range(2):
        write_volume(msd / "imagesTr" / f"case_{i}.nii.gz", shape=(20, 18, 12), seed=i)
        nib.save(nib.Nifti1Image(np.ones((20, 18, 12), np.uint8), np.diag([4.0, 4.0, 8.0, 1.0])),
                 msd / "labelsTr" / f"case_{i}.nii.gz")
    before = hashes(msd)
    for flags in ([], ["--overwrite"]):
        result = tctseg("predict", model, msd / "imagesTr", msd / "labelsTr", "--modality", "CT", "--no-progress", *flags)
        line = one_error_line(result, "predict")
        assert line == (f"tctseg predict: error: {msd / 'labelsTr'}: holds case_0.nii.gz, which tctseg did not write "
                        "there (its index.json does not list it): predict skips or replaces only its own outputs, "
                        "choose an empty or new output folder"), line
        assert hashes(msd) == before, flags
        assert not (msd / "labelsTr" / "index.json").exists()


def test_predict_skips_and_overwrites_only_what_its_index_lists(tmp_path, model, capsys, one_thread):
    """The rules behind the refusal above, in-process (the real process is tested above)."""
    scans = tmp_path / "scans"
    scans.mkdir()
    write_volume(scans / "a.nii.gz", shape=(20, 18, 12))
    out = tmp_path / "out"
    argv = ["predict", str(model), str(scans), str(out), "--modality", "CT", "--no-progress"]

    def refused(*flags: str) -> str:
        assert main([*argv, *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    assert main(argv) == 0 and "1 written, 0 skipped" in capsys.readouterr().out
    [entry] = json.loads((out / "index.json").read_text())
    assert entry["prediction"] == str((out / "a.nii.gz").resolve())
    assert main(argv) == 0 and "0 written, 1 skipped" in capsys.readouterr().out  # its own output: skipped
    # someone's NIfTI file (or preview, or statistics without an index) beside tctseg's: refused
    for name in ("b.nii.gz", "b_preview.png"):
        (out / name).write_bytes(b"someone's file")
        before = hashes(out)
        for flags in ([], ["--overwrite"]):
            assert f"{out}: holds {name}, which tctseg did not write there" in refused(*flags)
            assert hashes(out) == before
        (out / name).unlink()
    # an index.json that is not tctseg's is not replaced
    (out / "index.json").rename(out / "saved.json")
    (out / "index.json").write_text('{"my": "index"}')
    before = hashes(out)
    assert refused("--overwrite") == (
        f"tctseg predict: error: {out / 'index.json'}: is not a prediction index tctseg wrote (a JSON list of cases); "
        "predict would replace it: choose an empty or new output folder")
    assert hashes(out) == before
    (out / "saved.json").replace(out / "index.json")
    assert main([*argv, "--overwrite"]) == 0 and "1 written, 0 skipped" in capsys.readouterr().out
    # statistics.json in a folder without an index is someone else's too
    other = tmp_path / "other"
    other.mkdir()
    (other / "statistics.json").write_text("{}")
    assert main(["predict", str(model), str(scans), str(other), "--modality", "CT", "--no-progress"]) == 2
    assert f"{other}: holds statistics.json, which tctseg did not write there" in capsys.readouterr().err


KILLED_AFTER_FIRST_FILE = """
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_predict import IntensityAndEdge, tiny_config
import tctseg.inference.predict as predict
save = predict.save_nifti
def save_then_die(*args, **kwargs):
    save(*args, **kwargs)
    os._exit(9)  # SIGKILL-like: no clean-up, no final index
predict.save_nifti = save_then_die
predict.predict_cases((IntensityAndEdge(), tiny_config(spacing=[4.0, 4.0, 8.0])), [sys.argv[2]], sys.argv[3],
                      modality="CT", progress=False)
"""


def test_a_run_killed_right_after_writing_a_label_map_still_owns_it(tmp_path, model, capsys, one_thread):
    """Each case is listed in index.json before its first file is written, so the file a killed
    run leaves is its own: the rerun skips it instead of refusing it as a stranger's."""
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(2):
        write_volume(scans / f"s{i}.nii.gz", shape=(20, 18, 12), seed=i)
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_FIRST_FILE, str(Path(__file__).parent), str(scans), str(out)],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["index.json", "s0.nii.gz"]
    assert main(["predict", str(model), str(scans), str(out), "--modality", "CT", "--no-progress"]) == 0
    assert "1 written, 1 skipped" in capsys.readouterr().out
    assert [e["case_id"] for e in json.loads((out / "index.json").read_text())] == ["s0", "s1"]
