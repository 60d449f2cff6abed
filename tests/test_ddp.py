"""Two CPU processes (gloo) through torchrun: replicas stay identical, only rank 0 writes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _training_data import write_run_config

from tctseg.config import load_config
from tctseg.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_gloo_processes_keep_identical_replicas(tmp_path):
    pytest.importorskip("tctseg.data.sampler", reason="needs the patch sampler (tctseg.data.sampler)")
    cache = pytest.importorskip("tctseg.preprocessing.cache", reason="needs the prepared cache")
    config_path = write_run_config(tmp_path, epochs=2, iterations_per_epoch=3, batch_size=1, val_every=2)
    cache.prepare(load_config(config_path), roles=("train", "validation"), progress=False)
    run, dumps = tmp_path / "run", tmp_path / "dumps"
    # the real `tctseg train` under torchrun; the launcher only adds what the test needs to
    # see: each rank's final weights, saved after Trainer.fit returns
    launcher = tmp_path / "launch_train.py"
    launcher.write_text(
        "import os, sys, torch\n"
        "from tctseg.training.trainer import Trainer\n"
        "from tctseg.cli import main\n"
        "fit = Trainer.fit\n"
        "def fit_and_dump(self, *args, **kwargs):\n"
        "    summary = fit(self, *args, **kwargs)\n"
        f"    os.makedirs({str(dumps)!r}, exist_ok=True)\n"
        f"    torch.save(self.method.state_dict(), os.path.join({str(dumps)!r}, f\"rank{{os.environ['RANK']}}.pt\"))\n"
        "    return summary\n"
        "Trainer.fit = fit_and_dump\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(launcher), "train", str(config_path), "--output", str(run), "--device", "cpu",
         "--no-prepare", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    rank0 = torch.load(dumps / "rank0.pt", weights_only=True)
    rank1 = torch.load(dumps / "rank1.pt", weights_only=True)
    checkpoint = load_checkpoint(run / "checkpoint_last.pt")
    assert rank0.keys() == rank1.keys() == checkpoint["model"].keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        assert torch.equal(rank0[key], checkpoint["model"][key]), key
    # training moved the learnable loss weights away from their initial zeros
    assert not torch.equal(rank0["uncertainty.log_vars"], torch.zeros_like(rank0["uncertainty.log_vars"]))

    # rank 0 alone wrote the log: one row per epoch, and a validation at the last epoch
    with (run / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[-1]["val_dice_mean"] != ""
    assert result.stdout.count("trained 2 epochs") == 1
