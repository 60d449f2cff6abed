"""The GPU check (`make gpu-check`): every CUDA code path of tctseg, once, in a few minutes.

    python scripts/gpu_check.py                      # on a CUDA machine (≤ 8 min on one GPU)
    python scripts/gpu_check.py --quick --device cpu # toy sizes on the CPU: checks the script

Checks, in order (each prints one row; the first failure does not stop the others):

1. ``amp_<method>``: for each of the eight methods, ``--steps`` mixed-precision training
   steps (the trainer's autocast dtype and gradient scaler) at the paper's patch 192×192×64,
   batch 4, width 16: seconds per step (median after one warm-up step), peak GPU memory,
   finite float32 loss.
2. ``train_resume``: ``tctseg train configs/chaos_t2.yaml`` (TCT) on the real CHAOS scans
   for one epoch, then ``--resume`` to a second: the checkpoint says epoch 2, log.csv 2 rows.
3. ``predict_agreement``: ``tctseg predict`` of the real CT (``../shared/data/ct-example``)
   with that checkpoint on the device and on the CPU: label maps agree on ≥ 99.9 % of voxels.
4. ``bench``: ``benchmarks/run.py --device <device>`` (its ratios: TCT/TAL step, TCT/bare
   inference, per-class/TCT inference).
5. ``ddp``: ``torchrun --nproc_per_node 1 -m tctseg train`` (NCCL on CUDA, gloo on the CPU).

Prints one table and writes ``benchmarks/results/gpu-<date>.json``; exits 1 when any check
failed. With ``--quick`` the sizes are toys (timings mean nothing) so the CPU test suite can
run the whole script.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TCTSEG_SHARED", REPO.parent / "shared"))
CT_EXAMPLE = SHARED / "data" / "ct-example" / "ct.nii.gz"
CHAOS_CONFIG = REPO / "configs" / "chaos_t2.yaml"
PAPER_CLASSES = ["liver", "spleen", "left_kidney", "right_kidney", "pancreas"]


def _tctseg(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tctseg", *args]
    result = subprocess.run(command, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} exited {result.returncode}: {(result.stderr or result.stdout)[-800:]}")
    return result


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def check_amp_steps(method: str, device: str, quick: bool, steps: int) -> dict[str, Any]:
    """``steps`` training steps of ``method`` through the trainer's autocast and scaler."""
    import torch

    from tctseg.config import config_from_dict
    from tctseg.methods import build_method
    from tctseg.training.trainer import autocast_dtype, build_optimizer

    patch, batch, width = ((32, 32, 16), 2, 4) if quick else ((192, 192, 64), 4, 16)
    config = config_from_dict({
        "classes": PAPER_CLASSES, "datasets": [],
        "network": {"width": width, "depth": 5, "norm": "batch"},
        "method": {"name": method},
        "train": {"batch_size": batch, "patch_size": list(patch), "epochs": 10},
    })
    dev = torch.device(device)
    model = build_method(config).to(dev).to(memory_format=torch.channels_last_3d)
    optimizer = build_optimizer(model.parameters(), config)
    # on CUDA the trainer's own choice (bf16 where supported, else fp16 with a scaler); the
    # CPU has no CUDA branch, so --device cpu stands it in with CPU bf16 autocast
    dtype = autocast_dtype("auto", dev) if dev.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 1, *patch, generator=generator).to(dev).contiguous(memory_format=torch.channels_last_3d)
    labels = torch.randint(0, len(PAPER_CLASSES) + 1, (batch, *patch), generator=generator).to(dev)
    annotated = (torch.arange(len(PAPER_CLASSES)) % batch == torch.arange(batch)[:, None]).to(dev)
    data = {"image": image, "labels": labels, "annotated": annotated}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times, losses = [], []
    for step in range(steps + 1):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        with torch.autocast(dev.type, dtype=dtype):
            out = model(data, epoch=5)
        if out.total.dtype != torch.float32:
            raise RuntimeError(f"loss in {out.total.dtype}, not float32")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out.total).backward()
        scaler.step(optimizer)
        scaler.update()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if step:  # the first step warms up (cuDNN autotuning, allocator)
            times.append(time.perf_counter() - start)
        losses.append(float(out.total.detach()))
    if not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"non-finite loss: {losses}")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise RuntimeError("weights left float32")
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return {"s_per_step": statistics.median(times), "peak_mem_mb": peak, "amp_dtype": str(dtype).removeprefix("torch."),
            "loss_first": losses[0], "loss_last": losses[-1]}


def check_train_resume(device: str, quick: bool, work: Path) -> dict[str, Any]:
    """One epoch of the CHAOS recipe, then ``--resume`` with ``train.epochs=2``: the resumed
    run continues from the checkpoint (epoch 2, two log rows)."""
    from tctseg.checkpoint import load_checkpoint

    run = work / "chaos_run"
    common = ["--method", "tct", "--output", str(run), "--device", device, "--no-progress",
              "--set", f"cache_dir={work / 'cache'}"]
    if quick:
        common += ["--set", "train.iterations_per_epoch=2", "--set", "train.patch_size=[32,32,16]",
                   "--set", "network.width=4", "--set", "train.num_workers=0"]
    start = time.perf_counter()
    _tctseg("train", str(CHAOS_CONFIG), *common, "--set", "train.epochs=1", timeout=1200)
    if load_checkpoint(run / "checkpoint_last.pt")["epoch"] != 1:
        raise RuntimeError("the one-epoch run did not stop at epoch 1")
    _tctseg("train", str(CHAOS_CONFIG), *common, "--set", "train.epochs=2", "--resume", timeout=1200)
    resumed = load_checkpoint(run / "checkpoint_last.pt")
    rows = (run / "log.csv").read_text(encoding="utf-8").strip().splitlines()
    if resumed["epoch"] != 2 or len(rows) != 3:
        raise RuntimeError(f"resume: checkpoint epoch {resumed['epoch']}, {len(rows) - 1} log rows (want 2, 2)")
    return {"seconds": time.perf_counter() - start, "checkpoint": str(run / "checkpoint_last.pt"),
            "best_val_dice": resumed.get("best_metric")}


def check_predict_agreement(device: str, checkpoint: str, work: Path) -> dict[str, Any]:
    """The real CT predicted on ``device`` and on the CPU: fraction of voxels that agree."""
    import nibabel as nib
    import numpy as np

    if not CT_EXAMPLE.is_file():
        raise RuntimeError(f"{CT_EXAMPLE}: not found (set TCTSEG_SHARED)")
    maps, seconds = {}, {}
    for where in dict.fromkeys((device, "cpu")):
        out = work / f"predict_{where}"
        start = time.perf_counter()
        _tctseg("predict", checkpoint, str(CT_EXAMPLE), str(out), "--device", where, "--modality", "CT",
                "--no-progress", timeout=900)
        seconds[where] = time.perf_counter() - start
        maps[where] = np.asarray(nib.load(str(out / "ct.nii.gz")).dataobj)
    agreement = float((maps[device] == maps["cpu"]).mean())
    if agreement < 0.999:
        raise RuntimeError(f"label maps agree on {agreement:.4%} of voxels (< 99.9 %)")
    return {"agreement": agreement, **{f"predict_{k}_s": v for k, v in seconds.items()}}


def check_bench(device: str, quick: bool, work: Path) -> dict[str, Any]:
    """benchmarks/run.py on ``device``; its headline ratios."""
    args = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--device", device, "--out", str(work / "bench"),
            "--repeats", "1" if quick else "3"]
    if quick:
        args.append("--quick")
    result = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"benchmarks/run.py exited {result.returncode}: {result.stderr[-800:]}")
    figures = json.loads((work / "bench" / "latest.json").read_text(encoding="utf-8"))
    flat = figures.get("figures", figures)
    keys = ("train_step_tct_over_tal", "infer_tct_over_bare", "infer_perclass_over_tct")
    return {k: flat.get(k) for k in keys}


def check_ddp(device: str, quick: bool, work: Path) -> dict[str, Any]:
    """torchrun with one process: the process group starts (NCCL on CUDA, gloo on the CPU)."""
    run = work / "ddp_run"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
            "-m", "tctseg", "train", str(CHAOS_CONFIG), "--method", "tal", "--output", str(run),
            "--device", device, "--no-progress", "--set", f"cache_dir={work / 'cache'}",
            "--set", "train.epochs=1", "--set", "train.iterations_per_epoch=2"]
    if quick:
        args += ["--set", "train.patch_size=[32,32,16]", "--set", "network.width=4", "--set", "train.num_workers=0"]
    start = time.perf_counter()
    result = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    if result.returncode != 0 or not (run / "checkpoint_last.pt").is_file():
        raise RuntimeError(f"torchrun exited {result.returncode}: {(result.stderr or result.stdout)[-800:]}")
    return {"seconds": time.perf_counter() - start, "backend": "nccl" if device == "cuda" else "gloo"}


def run_checks(args: argparse.Namespace) -> list[dict[str, Any]]:
    from tctseg.methods import available_methods

    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="tctseg-gpu-check-")) if args.work_dir is None else args.work_dir
    work.mkdir(parents=True, exist_ok=True)

    def check(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        start = time.perf_counter()
        try:
            figures = fn()
            row = {"check": name, "ok": True, **figures}
        except Exception as e:  # noqa: BLE001 - every failure is reported, the rest still run
            figures = None
            row = {"check": name, "ok": False, "error": f"{type(e).__name__}: {str(e).strip()[-600:]}"}
            if args.debug:
                traceback.print_exc()
        row["wall_s"] = time.perf_counter() - start
        rows.append(row)
        print(_format_row(row), flush=True)
        return figures

    skip = set(args.skip)
    if "amp" not in skip:
        for method in sorted(available_methods()):
            check(f"amp_{method}", lambda m=method: check_amp_steps(m, args.device, args.quick, args.steps))
    trained = None
    if "train" not in skip:
        trained = check("train_resume", lambda: check_train_resume(args.device, args.quick, work))
    if "predict" not in skip:
        if trained is None:
            rows.append({"check": "predict_agreement", "ok": False, "error": "no checkpoint: train_resume failed or was skipped"})
            print(_format_row(rows[-1]), flush=True)
        else:
            check("predict_agreement", lambda: check_predict_agreement(args.device, trained["checkpoint"], work))
    if "bench" not in skip:
        check("bench", lambda: check_bench(args.device, args.quick, work))
    if "ddp" not in skip:
        check("ddp", lambda: check_ddp(args.device, args.quick, work))
    return rows


def _format_row(row: dict[str, Any]) -> str:
    shown = ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in row.items() if k not in ("check", "ok", "error", "checkpoint") and v is not None
    )
    status = "ok  " if row["ok"] else "FAIL"
    return f"{status} {row['check']:<20} {row.get('error', shown)}"


def machine(device: str) -> dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="default cuda")
    p.add_argument("--steps", type=int, default=None, help="AMP training steps per method (default 20; --quick 2)")
    p.add_argument("--quick", action="store_true", help="toy sizes: checks the script, timings meaningless")
    p.add_argument("--skip", nargs="*", default=[], choices=("amp", "train", "predict", "bench", "ddp"))
    p.add_argument("--work-dir", type=Path, help="scratch folder (default: a new temporary one)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="where gpu-<date>.json goes")
    p.add_argument("--debug", action="store_true", help="print tracebacks of failed checks")
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 2 if args.quick else 20
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device is available here (use --device cpu --quick to check the script)", file=sys.stderr)
        return 2
    print(f"gpu-check on {machine(args.device)}", flush=True)
    rows = run_checks(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d")
    path = args.out / (f"gpu-{stamp}.json" if not args.quick else f"gpu-check-quick-{stamp}.json")
    path.write_text(json.dumps({"date": stamp, "quick": args.quick, "machine": machine(args.device), "checks": rows},
                               indent=2), encoding="utf-8")
    failed = [r["check"] for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} checks passed; {path}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
