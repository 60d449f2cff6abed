"""configs/chaos_t2_all16.yaml trains as shipped (its recipe at toy size): all 16 real CHAOS
subjects prepared, four single-organ training sets, no validation, the last checkpoint kept."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tctseg.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.mark.skipif(not (SHARED / "data" / "chaos-t2").is_dir(), reason="needs ../shared/data/chaos-t2")
def test_all16_config_trains_on_all_sixteen_subjects_without_validation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TCTSEG_SHARED", str(SHARED))
    monkeypatch.delenv("TCTSEG_CHAOS_TEST", raising=False)
    run = tmp_path / "run"
    code = main([
        "train", str(ROOT / "configs" / "chaos_t2_all16.yaml"), "--method", "tct", "--no-progress",
        "--output", str(run),
        "--set", f"cache_dir={tmp_path / 'cache'}",
        "--set", "train.epochs=1", "--set", "train.iterations_per_epoch=2", "--set", "train.patch_size=[32,32,8]",
        "--set", "network.width=4", "--set", "network.depth=3", "--set", "train.num_workers=0",
    ])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    (cache,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    cases = {d.name: sorted(c.name for c in d.iterdir() if c.is_dir()) for d in cache.iterdir() if d.is_dir()}
    assert sorted(cases) == ["chaos_left_kidney", "chaos_liver", "chaos_right_kidney", "chaos_spleen"]
    assert [len(v) for v in cases.values()] == [4, 4, 4, 4] and len({c for v in cases.values() for c in v}) == 16
    assert (run / "checkpoint_last.pt").is_file() and not (run / "checkpoint_best.pt").exists()
    rows = list(csv.DictReader((run / "log.csv").open(encoding="utf-8")))
    assert len(rows) == 1 and not any(k.startswith("val_dice") and rows[0][k] for k in rows[0])
    state = torch.load(run / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] in (0, 1)
