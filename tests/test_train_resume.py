"""--resume continues exactly where a run stopped: same weights as an uninterrupted run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _processes import kill_when
from _training_data import interrupted_after_epochs, memory_cases, tiny_config, use_sampler, write_run_config

from tctseg.config import load_config
from tctseg.errors import ConfigError
from tctseg.checkpoint import load_checkpoint
from tctseg.training import Trainer

REPO = Path(__file__).resolve().parents[1]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _epochs_logged(run: Path) -> list[str]:
    with (run / "log.csv").open(newline="") as f:
        return [row["epoch"] for row in csv.DictReader(f)]


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    use_sampler(monkeypatch)
    train, val = memory_cases()
    config = tiny_config("tct", epochs=4, iterations_per_epoch=2, val_every=2)
    kwargs = dict(device="cpu", train_cases=train, val_cases=val, progress=False)

    straight = Trainer(config, tmp_path / "straight", **kwargs)
    straight.fit()

    # Ctrl-C in epoch 3: a new process starts from checkpoint_last.pt (epoch 2)
    with interrupted_after_epochs(2):
        Trainer(config, tmp_path / "resumed", **kwargs).fit()
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint_last.pt")["epoch"] == 2
    resumed = Trainer(config, tmp_path / "resumed", resume=True, **kwargs)
    assert resumed.start_epoch == 2
    resumed.fit()

    _assert_same_weights(straight.method.state_dict(), resumed.method.state_dict())
    a = load_checkpoint(tmp_path / "straight" / "checkpoint_last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint_last.pt")
    _assert_same_weights(a["model"], b["model"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][k]["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])
    assert a["best_metric"] == b["best_metric"]
    assert _epochs_logged(tmp_path / "resumed") == ["1", "2", "3", "4"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_reaches_the_uninterrupted_weights(tmp_path):
    pytest.importorskip("tctseg.data.sampler", reason="needs the patch sampler (tctseg.data.sampler)")
    pytest.importorskip("tctseg.preprocessing.cache", reason="needs the prepared cache (tctseg.preprocessing.cache)")
    config_path = write_run_config(tmp_path, epochs=3, iterations_per_epoch=12, val_every=10)
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "tctseg", "train", str(config_path), "--output", str(run),
               "--device", "cpu", "--no-progress"]

    # inside epoch 2: 0.3 s after the first checkpoint
    kill_when(command, lambda: (run / "checkpoint_last.pt").exists(), 0.3, env)
    assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] in (1, 2)

    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _epochs_logged(run) == ["1", "2", "3"]

    # the uninterrupted reference, in this process with the same single thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = Trainer(load_config(config_path), tmp_path / "straight", device="cpu", progress=False)
        reference.fit()
    finally:
        torch.set_num_threads(threads)
    _assert_same_weights(reference.method.state_dict(), load_checkpoint(run / "checkpoint_last.pt")["model"])


# --------------------------------------------------------------------------- what a resume may change (issue 31, item 6)


def _hashes(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_resume_refuses_another_optimizer_weight_decay_or_fewer_epochs_before_anything_is_written(tmp_path, capsys,
                                                                                                   one_thread):
    """Adam's state loaded into SGD was a KeyError 'momentum' in the first step; a changed weight
    decay was silently the old one; fewer epochs rewrote config.yaml. Each is one line naming the
    old and the new value, refused before the cache is prepared and before config.yaml is written."""
    import shutil

    from tctseg.cli import main

    config = write_run_config(tmp_path, epochs=2, iterations_per_epoch=1)
    run = tmp_path / "run"
    train = ["train", str(config), "--output", str(run), "--no-progress"]
    assert main(train) == 0
    capsys.readouterr()
    shutil.rmtree(tmp_path / "cache")  # a refusal must come before the cache is prepared again
    before = _hashes(run)
    for change, expected in (
        ("train.optimizer=sgd", f"train.optimizer: 'sgd', but the run in {run} was trained with 'adam' "
                                "(checkpoint_last.pt holds its adam state); a resumed run keeps its optimizer: resume with "
                                "train.optimizer=adam, or start a new run (another --output, or --overwrite)"),
        ("train.weight_decay=0.01", f"train.weight_decay: 0.01, but the run in {run} was trained with 0.0; a resumed "
                                    "run keeps its weight decay (its optimizer state holds it): resume with "
                                    "train.weight_decay=0.0, or start a new run"),
        ("train.epochs=1", f"train.epochs: 1, but the run in {run} has completed 2 epochs (checkpoint_last.pt); resume "
                           "with train.epochs >= 2, or start a new run"),
    ):
        assert main([*train, "--resume", "--set", change]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tctseg train: error: {expected}") and err.count("\n") == 1, err
        assert _hashes(run) == before and not (tmp_path / "cache").exists()
    # the same settings resume; more epochs continue where the run stopped
    assert main([*train, "--resume", "--set", "train.epochs=3"]) == 0
    assert _epochs_logged(run) == ["1", "2", "3"]
    assert load_checkpoint(run / "checkpoint_last.pt")["config"]["train"]["epochs"] == 3

    # a staged (PFL) run: every stage's checkpoint is checked, the stage named
    staged = tmp_path / "staged"
    (staged / "stage1" / "liver").mkdir(parents=True)
    shutil.copy(run / "checkpoint_last.pt", staged / "stage1" / "liver" / "checkpoint_last.pt")
    from tctseg.training.trainer import check_resume

    with pytest.raises(ConfigError, match=rf"train.optimizer: 'sgd', but the run in {staged / 'stage1' / 'liver'} "
                                          "was trained with 'adam'"):
        check_resume(load_config(config, ["train.optimizer=sgd", "train.epochs=3"]), staged)


def test_a_real_resume_with_sgd_is_one_line_not_a_keyerror_traceback(tmp_path):
    config = write_run_config(tmp_path, epochs=1, iterations_per_epoch=1)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "tctseg", "train", str(config), "--output", str(run), "--no-progress"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    resumed = subprocess.run([*command, "--resume", "--set", "train.optimizer=sgd", "--set", "train.epochs=2"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr, resumed.stderr
    assert resumed.stderr.strip().splitlines() == [
        f"tctseg train: error: train.optimizer: 'sgd', but the run in {run} was trained with 'adam' (checkpoint_last.pt "
        "holds its adam state); a resumed run keeps its optimizer: resume with train.optimizer=adam, or start a new run "
        "(another --output, or --overwrite)"]
    assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] == 1


# --------------------------------------------------------------------------- a failed first epoch (issue 31, smaller)


def test_a_train_that_fails_before_its_first_checkpoint_leaves_no_run_behind(tmp_path, capsys, monkeypatch, one_thread):
    """It left config.yaml and tensorboard/, so the same command then needed --resume or --overwrite."""
    from tctseg.cli import main
    from tctseg.errors import TrainingError

    config = write_run_config(tmp_path, epochs=2, iterations_per_epoch=1)

    def fails(self, epoch):
        raise TrainingError(f"training stopped in epoch {epoch + 1}: the loss was NaN (stand-in)")

    real_epoch = Trainer.train_epoch
    monkeypatch.setattr(Trainer, "train_epoch", fails)
    # a folder this command creates goes again; a folder that was there stays, with the user's own files
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    (kept / "tensorboard").mkdir()
    (kept / "tensorboard" / "events.mine").write_text("another tool's logs")
    before = _hashes(kept)
    for run in (tmp_path / "new", kept):
        assert main(["train", str(config), "--output", str(run), "--no-progress"]) == 2
        assert "tctseg train: error: training stopped in epoch 1" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert _hashes(kept) == before and sorted(p.name for p in kept.iterdir()) == ["notes.txt", "tensorboard"]

    # Ctrl-C in the first epoch: the same
    def interrupted(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    assert main(["train", str(config), "--output", str(tmp_path / "new"), "--no-progress"]) == 130
    assert not (tmp_path / "new").exists()

    # after a first checkpoint a failure keeps the run, which --resume continues
    def second_fails(self, epoch):
        return real_epoch(self, epoch) if epoch == 0 else fails(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", second_fails)
    run = tmp_path / "new"
    assert main(["train", str(config), "--output", str(run), "--no-progress"]) == 2
    assert {"config.yaml", "checkpoint_last.pt", "log.csv", "tensorboard"} <= {p.name for p in run.iterdir()}
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    assert main(["train", str(config), "--output", str(run), "--no-progress", "--resume"]) == 0
    assert _epochs_logged(run) == ["1", "2"]
