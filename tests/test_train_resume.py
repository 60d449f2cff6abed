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
from _training_data import memory_cases, tiny_config, use_sampler, write_run_config

from tctseg.config import load_config
from tctseg.training import Trainer, load_checkpoint

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

    # "interrupted" after 2 epochs: a new process would start from checkpoint_last.pt
    Trainer(config, tmp_path / "resumed", **kwargs).fit(stop_after_epoch=2)
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
