"""One sliding window of the paper's network through each inference backend (issue 30, item 1).

    python benchmarks/window_backends.py [--repeats 5] [--batch 1] [--out FILE]

The network is configs/paper_ct.yaml's (TCT's U-Net, width 16, depth 5, instance norm; 5
classes), a window is 192×192×64, untrained weights (the cost does not depend on them). For
each backend (``torch``: eager fp32 channels-last, as predict runs it; ``onnxruntime`` and
``openvino`` where installed: :mod:`tctseg.inference.backends`, fp32) the export and first
call are timed once, then ``--repeats`` calls of ``predict_logits`` on a window batch
(median, min, max). Beside each: the window's FLOPs (``FlopCounterMode`` over the eager
forward: convolutions and matrix products) as achieved GFLOP/s, against this CPU's sustained
fp32 conv3d peak measured in the same run (benchmarks/profile_step.py's ``peak_gflops``), and
the largest difference of the logits from eager PyTorch's.

``openvino-bf16`` runs at bf16 where the CPU has it (AMX, AVX512-BF16), fp32 elsewhere.
Writes benchmarks/results/window_backends.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_step import cpu_isa, cpu_name, peak_gflops  # noqa: E402  (beside this script)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "window_backends.json"


def paper_network():
    from tctseg.config import load_config
    from tctseg.methods import build_method

    config = load_config(REPO / "configs" / "paper_ct.yaml")
    torch.manual_seed(0)
    method = build_method(config).eval()
    if config.network.channels_last:
        method.to(memory_format=torch.channels_last_3d)
    return method, config


def window_flops(method, window) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        method.predict_logits(window)
    return float(counter.get_total_flops())


def timed(call, window, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.inference_mode():
            call(window)
        times.append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1, help="windows per call")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from tctseg.inference.backends import available_backends, network_for

    method, config = paper_network()
    patch = tuple(config.train.patch_size)
    window = torch.rand(args.batch, 1, *patch)
    if config.network.channels_last:
        window = window.contiguous(memory_format=torch.channels_last_3d)
    flops = window_flops(method, window)
    peak = peak_gflops()
    print(f"{cpu_name()} ({cpu_isa()}), {torch.get_num_threads()} threads; conv3d peak {peak:.0f} GFLOP/s; "
          f"window {args.batch}×{patch}: {flops / 1e9:.1f} GFLOP", flush=True)
    with torch.inference_mode():
        reference = method.predict_logits(window)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tctseg-windows-") as folder:
        for backend in available_backends():
            label = backend
            t = time.perf_counter()
            network = network_for(method, "predict_logits", backend, patch, scratch=Path(folder))
            with torch.inference_mode():
                out = network(window)  # the first call: compilation, allocation
            first = time.perf_counter() - t
            times = timed(network, window, args.repeats)
            median = statistics.median(times)
            row = {
                "backend": label,
                "export_and_first_call_s": round(first, 2),
                "median_s": round(median, 3),
                "min_s": round(min(times), 3),
                "max_s": round(max(times), 3),
                "gflops_per_s": round(flops / median / 1e9, 1),
                "of_peak": round(flops / median / 1e9 / peak, 3),
                "max_abs_logit_difference": float((out - reference).abs().max()),
            }
            rows.append(row)
            print(f"  {label:40s} {median:7.3f} s per call (min {min(times):.3f}, max {max(times):.3f}); "
                  f"{row['gflops_per_s']:.0f} GFLOP/s = {100 * row['of_peak']:.0f} % of peak; "
                  f"first call {first:.1f} s; |Δ logits| ≤ {row['max_abs_logit_difference']:.1e}", flush=True)
    result = {
        "cpu": cpu_name(), "isa": cpu_isa(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "window": [args.batch, 1, *patch], "gflop_per_call": round(flops / 1e9, 2), "peak_gflops": round(peak, 1),
        "repeats": args.repeats, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
