"""Smoke run of benchmarks/run.py at toy sizes: every figure of issue 8 is produced and sane.

No timing is asserted (timings at these sizes mean nothing); the full run is ``make bench``.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

RUN_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"

FIGURES = (
    "train_step_tct_over_tal",
    "infer_tct_over_bare",
    "infer_perclass_over_tct",
    "infer_naive_perclass_over_tct",
    "sliding_window_over_tiles",
    "sliding_window_s",
    "sliding_window_peak_mem_mb",
    "loader_over_step",
    "train_step_peak_mem_mb",
    "preprocess_ct_s",
)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("tctseg_benchmarks_run", RUN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_figure_is_produced_at_toy_sizes(bench, tmp_path, monkeypatch, one_thread):
    # in-process children: a fresh interpreter per child costs seconds, ru_maxrss still works
    monkeypatch.setattr(bench, "run_child", bench._child)
    args = bench.parse_args(["--quick", "--out", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work")])
    args.patch, args.infer_patch, args.roi, args.volume = [16, 16, 16], [16, 16, 16], [16, 16, 16], [24, 24, 20]
    args.workers, args.loader_batches = 0, 2
    result = bench.run_all(args)

    figures = result["figures"]
    for key in FIGURES:
        assert math.isfinite(figures[key]) and figures[key] >= 0, key
    # 24×24×20 with roi 16 and overlap 0.5: MONAI steps by 8, so 2 × 2 × 2 windows
    assert result["sections"]["sliding_window"]["windows"] == 8
    # the deployed TCT network IS the bare network with the same weights (ATHs not run)
    assert result["sections"]["inference"]["tct_equals_bare_output"] is True
    assert result["sections"]["inference"]["params_deployed_tct"] == result["sections"]["inference"]["params_bare"]
    assert result["sections"]["loader"]["patches"] == 2 * 2
    # 0.7×0.7×2.5 mm resampled to 1×1×3 mm: a smaller grid along every axis
    shape = result["sections"]["preprocess"]["prepared_shape"]
    assert len(shape) == 3 and all(0 < p < v for p, v in zip(shape, args.volume))
    for key in ("date", "cpu", "torch", "torch_threads", "load_average"):
        assert result["machine"][key] is not None
    json.dumps(result)  # serialisable as latest.json
    table = bench.markdown(result)
    assert "train_step_tct_over_tal" in table and "loader_over_step" in table and "preprocess_ct_s" in table
