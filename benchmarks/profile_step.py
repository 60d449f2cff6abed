"""Where a training step's time goes: torch.profiler's top operators, the step's FLOPs and the
achieved GFLOP/s against this CPU's sustained peak (a large conv3d measured in the same run).

    .venv/bin/python benchmarks/profile_step.py                       # TCT and TAL, width 16 and 8
    .venv/bin/python benchmarks/profile_step.py --widths 16 --methods tct --top 25

The step is the CHAOS recipe's (configs/chaos_t2.yaml): 4 classes, 96×96×32, batch 2, instance
norm, channels-last, Adam; forward, finite check, backward, optimiser step — as the trainer
takes it. Synthetic partially labelled batch (each sample annotates one organ). Writes the
tables to stdout and, with ``--json``, the figures to a file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

CLASSES = ["liver", "spleen", "left_kidney", "right_kidney"]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_isa() -> str:
    try:
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    return " ".join(f for f in wanted if f in flags) or "no AVX2"


def chaos_config(method: str, width: int, patch=(96, 96, 32), batch: int = 2, norm: str = "instance"):
    from tctseg.config import config_from_dict

    return config_from_dict(
        {
            "classes": CLASSES,
            "datasets": [{"name": "bench", "format": "nnunet", "path": "unused"}],
            "network": {"width": width, "depth": 5, "norm": norm, "channels_last": True},
            "method": {"name": method},
            "train": {"batch_size": batch, "patch_size": list(patch), "epochs": 16, "optimizer": "adam", "lr": 1e-3},
        }
    )


def partial_batch(patch, batch: int, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random image, blocky labels; sample b annotates class b % n only (as CHAOS's one-organ sets)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand((batch, 1, *patch), generator=g)
    coarse = torch.randint(0, n + 1, (batch, *(max(1, p // 8) for p in patch)), generator=g)
    labels = torch.nn.functional.interpolate(coarse[:, None].float(), size=tuple(patch), mode="nearest")[:, 0].long()
    annotated = torch.zeros(batch, n, dtype=torch.bool)
    for b in range(batch):
        annotated[b, b % n] = True
    keep = torch.cat([torch.ones(batch, 1, dtype=torch.bool), annotated], 1)
    labels = labels * keep[torch.arange(batch).view(-1, 1, 1, 1), labels]
    return {"image": image.contiguous(memory_format=torch.channels_last_3d), "labels": labels, "annotated": annotated}


def build_step(method_name: str, width: int, patch, batch: int, norm: str = "instance"):
    from tctseg.methods import build_method
    from tctseg.training.trainer import build_optimizer

    config = chaos_config(method_name, width, patch, batch, norm)
    torch.manual_seed(0)
    method = build_method(config).to(memory_format=torch.channels_last_3d)
    method.train()
    optimizer = build_optimizer(method.parameters(), config)
    data = partial_batch(patch, batch, len(CLASSES))

    def step() -> None:
        out = method(data, 5)
        if not bool(torch.isfinite(out.total.detach())):
            raise RuntimeError("non-finite loss")
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()

    return method, data, step


def count_flops(method, data) -> float:
    """FLOPs of one forward + backward (torch's FlopCounterMode: convolutions and matmuls)."""
    with FlopCounterMode(display=False) as counter:
        out = method(data, 5)
        out.total.backward()
    method.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def peak_gflops(seconds: float = 3.0) -> float:
    """Sustained fp32 GFLOP/s of a large channels-last conv3d (64→64, 3×3×3, 48×48×32, batch 2)."""
    conv = torch.nn.Conv3d(64, 64, 3, padding=1).to(memory_format=torch.channels_last_3d)
    x = torch.rand(2, 64, 48, 48, 32).contiguous(memory_format=torch.channels_last_3d)
    flops = 2 * 2 * 64 * 64 * 27 * 48 * 48 * 32
    with torch.no_grad():
        for _ in range(2):
            conv(x)
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 3:
            t0 = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - t0)
    return flops / min(times) / 1e9


def time_step(step, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def profile_table(step, top: int) -> str:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=48)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="16,8")
    p.add_argument("--methods", default="tct,tal")
    p.add_argument("--patch", default="96,96,32")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--norm", default="instance", help="network.norm (the CHAOS recipe: instance; make bench: batch)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--no-profile", action="store_true", help="timings and FLOPs only")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    patch = tuple(int(v) for v in args.patch.split(","))
    print(f"CPU: {cpu_name()} ({cpu_isa()}), {torch.get_num_threads()} threads, torch {torch.__version__}")
    peak = peak_gflops()
    print(f"sustained fp32 conv3d peak: {peak:.1f} GFLOP/s")
    results = {"cpu": cpu_name(), "isa": cpu_isa(), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "peak_gflops": peak, "steps": []}
    for width in (int(w) for w in args.widths.split(",")):
        for name in args.methods.split(","):
            method, data, step = build_step(name, width, patch, args.batch, args.norm)
            flops = count_flops(method, data)
            times = time_step(step, args.warmup, args.repeats)
            med = statistics.median(times)
            row = {"method": name, "width": width, "norm": args.norm, "step_s": med, "times": times, "gflop": flops / 1e9,
                   "gflops_per_s": flops / med / 1e9, "of_peak": flops / med / 1e9 / peak}
            results["steps"].append(row)
            print(f"\n== {name} width {width} ({args.norm} norm): step {med:.3f} s (min {min(times):.3f}), {flops / 1e9:.1f} GFLOP "
                  f"(conv+matmul, fwd+bwd), {row['gflops_per_s']:.1f} GFLOP/s = {100 * row['of_peak']:.0f} % of peak")
            if not args.no_profile:
                print(profile_table(step, args.top))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
