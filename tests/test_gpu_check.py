"""scripts/gpu_check.py at toy sizes on the CPU: every check of `make gpu-check` runs and
passes here, so the day a GPU is lent the script is known to work (timings meaningless)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (SHARED / "chaos-t2").is_dir(), reason="needs ../shared/data/chaos-t2")
def test_gpu_check_runs_every_check_at_toy_sizes_on_the_cpu(tmp_path, capsys):
    gpu_check = _load()
    # the benchmark has its own smoke test (test_bench_smoke.py)
    code = gpu_check.main(["--quick", "--device", "cpu", "--skip", "bench", "--work-dir", str(tmp_path / "work"),
                           "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    (result,) = list((tmp_path / "out").glob("gpu-check-quick-*.json"))
    rows = {r["check"]: r for r in json.loads(result.read_text())["checks"]}
    assert set(rows) == {*(f"amp_{m}" for m in ("aal", "clip", "dodnet", "hermes", "me", "pfl", "tal", "tct")),
                         "train_resume", "predict_agreement", "ddp"}
    assert all(r["ok"] for r in rows.values())
    assert all(r["amp_dtype"] == "bfloat16" and r["s_per_step"] > 0 for k, r in rows.items() if k.startswith("amp_"))
    assert rows["predict_agreement"]["agreement"] == 1.0 and rows["ddp"]["backend"] == "gloo"
    assert "checks passed" in printed


def test_gpu_check_refuses_cuda_where_there_is_none(monkeypatch, capsys):
    import torch

    gpu_check = _load()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
