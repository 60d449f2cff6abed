"""What TCT costs, side by side with its baselines and the bare network (issue 8, paper Tab. 10).

    python benchmarks/run.py                    # CPU defaults, < 10 min on 2 cores (make bench)
    python benchmarks/run.py --device cuda      # the same figures on a GPU
    python benchmarks/run.py --quick            # tiny sizes: checks the script, timings meaningless

Writes ``benchmarks/results/latest.json`` (every figure, the settings and the machine) and
``latest.md`` (a table). Every time is the median of ``--repeats`` runs after ``--warmup``
runs; the things compared (TCT vs TAL, TCT vs bare net, ...) are timed interleaved in the
same process, so a change of machine load hits both sides alike. Peak memory is measured in a
child process (the peak resident set ``VmHWM`` on the CPU, which sees torch's allocations;
tracemalloc does not; ``torch.cuda.max_memory_allocated`` on a GPU).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
# the paper's CT class set (configs/paper_ct.yaml): N = 5
CLASSES = ["liver", "spleen", "left_kidney", "right_kidney", "pancreas"]

# paper Tab. 10 (GPU, 192×192×64 patches, batch 4): training "min.s" per epoch, inference s/patch
PAPER = {
    "train_epoch_tct": "29.49",
    "train_epoch_tal": "29.58",
    "train_step_tct_over_tal": round((29 * 60 + 49) / (29 * 60 + 58), 3),
    "infer_tct_s": 0.96,
    "infer_tal_s": 0.96,
    "infer_dodnet_s": 7.43,
    "infer_perclass_over_tct": round(7.43 / 0.96, 2),
}
TARGETS = {
    "train_step_tct_over_tal": "<= 1.05",
    "infer_tct_over_bare": "1.00 ± noise",
    "infer_perclass_over_tct": "paper ~7.7",
    "sliding_window_over_tiles": "<= 1.15",
    "loader_over_step": ">= 2",
}


# ----------------------------------------------------------------------------- helpers


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, threads, GPU name, torch/monai versions, date and load average."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import monai

        monai_version = monai.__version__
    except ImportError:  # pragma: no cover
        monai_version = None
    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "monai": monai_version,
        "python": platform.python_version(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int, no_warmup: tuple[str, ...] = ()
) -> dict[str, list[float]]:
    """Seconds of each call: ``warmup`` untimed rounds, then ``repeats`` rounds, every round
    calling each function once in turn (so load changes hit every side alike). Functions in
    ``no_warmup`` only run kernels another function already warmed up."""
    for _ in range(warmup):
        for name, fn in fns.items():
            if name not in no_warmup:
                fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def bench_config(width: int, patch: tuple[int, int, int], batch: int, method: str = "tct"):
    """The paper's CT setting (5 classes, Tab. 6 U-Net, batch norm, channels-last) at a chosen width/patch/batch."""
    from tctseg.config import config_from_dict

    return config_from_dict(
        {
            "classes": CLASSES,
            "datasets": [{"name": "bench", "format": "nnunet", "path": "unused"}],
            "network": {"width": width, "depth": 5, "norm": "batch", "channels_last": True},
            "method": {"name": method},
            "train": {"batch_size": batch, "patch_size": list(patch), "epochs": 200},
        }
    )


def build(method: str, width: int, patch, batch: int, device: torch.device) -> torch.nn.Module:
    from tctseg.methods import build_method

    torch.manual_seed(0)
    m = build_method(bench_config(width, patch, batch, method)).to(device)
    return m.to(memory_format=torch.channels_last_3d)


def synthetic_batch(patch, batch: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A partially labelled batch: random image, blocky labels, sample b annotates a subset of classes."""
    g = torch.Generator().manual_seed(seed)
    n = len(CLASSES)
    image = torch.rand((batch, 1, *patch), generator=g)
    coarse = torch.randint(0, n + 1, (batch, *(max(1, p // 8) for p in patch)), generator=g)
    labels = torch.nn.functional.interpolate(coarse[:, None].float(), size=tuple(patch), mode="nearest")[:, 0].long()
    annotated = torch.zeros(batch, n, dtype=torch.bool)
    for b in range(batch):  # like KiTS (kidneys), MSD liver, pancreas, spleen: one or two classes each
        annotated[b, b % n] = True
        if b % 2 == 0:
            annotated[b, (b + 2) % n] = True
    # voxels of classes a sample does not annotate are background in its labels
    channel_mask = torch.cat([torch.ones(batch, 1, dtype=torch.bool), annotated], 1)  # [B, N+1]
    labels = labels * channel_mask[torch.arange(batch).view(-1, 1, 1, 1), labels]
    return {
        "image": image.to(device).contiguous(memory_format=torch.channels_last_3d),
        "labels": labels.to(device),
        "annotated": annotated.to(device),
    }


def make_step(method: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> Callable[[], None]:
    """One training step as the trainer takes it: forward (autocast on CUDA), finite check,
    backward, Adam step."""
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-4)
    amp = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    method.train()

    def step() -> None:
        if amp is not None:
            with torch.autocast("cuda", dtype=amp):
                out = method(batch, 100)
        else:
            out = method(batch, 100)
        if not bool(torch.isfinite(out.total.detach())):
            raise RuntimeError("non-finite loss in the benchmark step")
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()

    return step


# ----------------------------------------------------------------------------- benchmarks


def bench_train_step(width: int, patch, batch: int, device: torch.device, warmup: int, repeats: int) -> dict[str, Any]:
    """Training step seconds of TCT and TAL on the same net, patch and batch, interleaved."""
    data = synthetic_batch(patch, batch, device)
    steps = {name: make_step(build(name, width, patch, batch, device), data, device) for name in ("tct", "tal")}
    times = time_interleaved(steps, device, warmup, repeats)
    tct, tal = median(times["tct"]), median(times["tal"])
    return {"width": width, "patch": list(patch), "batch": batch, "tct_s": tct, "tal_s": tal,
            "tct_over_tal": tct / tal, "times": times}


def bench_losses(patch, batch: int, device: torch.device, warmup: int, repeats: int) -> dict[str, Any]:
    """Loss-only forward + backward (no network): TCT's Eq. 1–7 vs TAL's marginal Dice, in ms."""
    from tctseg.losses import UncertaintyWeightedLoss, auxiliary_dice_terms, consistency_terms, marginal_dice_loss

    n = len(CLASSES)
    data = synthetic_batch(patch, batch, device)
    g = torch.Generator().manual_seed(1)
    main_logits = torch.randn((batch, n + 1, *patch), generator=g).to(device).requires_grad_()
    aux_logits = torch.randn((batch, n, 2, *patch), generator=g).to(device).requires_grad_()
    uncertainty = UncertaintyWeightedLoss(2).to(device)

    def tct() -> None:
        main = torch.softmax(main_logits, 1)
        aux = torch.softmax(aux_logits, 2)
        loss_main = marginal_dice_loss(main, data["labels"], data["annotated"])
        loss_aux = auxiliary_dice_terms(aux, data["labels"], data["annotated"]).sum(1).mean()
        total = uncertainty([loss_main, loss_aux]) + consistency_terms(main, aux).loss
        total.backward()

    def tal() -> None:
        marginal_dice_loss(torch.softmax(main_logits, 1), data["labels"], data["annotated"]).backward()

    times = time_interleaved({"tct": tct, "tal": tal}, device, warmup, repeats)
    return {"patch": list(patch), "batch": batch, "tct_ms": 1e3 * median(times["tct"]), "tal_ms": 1e3 * median(times["tal"])}


def bench_inference(patch, width: int, device: torch.device, warmup: int, repeats: int) -> dict[str, Any]:
    """Seconds per patch (batch 1, eval, no grad): deployed TCT, a bare U-Net + main head,
    DoDNet's predict_logits (backbone once, dynamic head per class) and a naive per-class
    variant (one backbone pass per class, the setting of the paper's 7.43 s)."""
    from tctseg.network import SegmentationNetwork, count_parameters

    n = len(CLASSES)
    tct = build("tct", width, patch, 1, device).eval()
    dodnet = build("dodnet", width, patch, 1, device).eval()
    torch.manual_seed(0)
    bare = SegmentationNetwork(n, width=width, depth=5, norm="batch", aux_heads=False).to(device)
    bare = bare.to(memory_format=torch.channels_last_3d).eval()
    # the same weights as TCT's backbone and main head: the outputs must be equal
    bare.load_state_dict({k: v for k, v in tct.network.state_dict().items() if not k.startswith("aux_heads.")})
    image = torch.rand((1, 1, *patch), generator=torch.Generator().manual_seed(2))
    image = image.to(device).contiguous(memory_format=torch.channels_last_3d)

    def naive_perclass() -> torch.Tensor:
        # one full backbone + head pass per class, keeping each class's foreground channel
        return torch.cat([bare(image, aux=False).main_logits[:, c : c + 1] for c in range(1, n + 1)], 1)

    fns = {
        "tct": lambda: tct.predict_logits(image),
        "bare": lambda: bare(image, aux=False).main_logits,
        "dodnet": lambda: dodnet.predict_logits(image),
        "naive_perclass": naive_perclass,
    }
    with torch.inference_mode():
        same = bool(torch.equal(fns["tct"](), fns["bare"]()))
        times = time_interleaved(fns, device, warmup, repeats, no_warmup=("naive_perclass",))
    t = {name: median(v) for name, v in times.items()}
    return {
        "patch": list(patch),
        "width": width,
        "tct_s": t["tct"],
        "bare_s": t["bare"],
        "dodnet_s": t["dodnet"],
        "naive_perclass_s": t["naive_perclass"],
        "tct_over_bare": t["tct"] / t["bare"],
        "dodnet_over_tct": t["dodnet"] / t["tct"],
        "naive_perclass_over_tct": t["naive_perclass"] / t["tct"],
        "tct_equals_bare_output": same,
        "params_deployed_tct": count_parameters(tct.network) - count_parameters(tct.network.aux_heads),
        "params_bare": count_parameters(bare),
        "params_dodnet": count_parameters(dodnet),
        "times": times,
    }


def _child(task: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process so that ``ru_maxrss`` (a high-water mark) belongs to one task."""
    device = torch.device(task["device"])
    if task["kind"] == "train_memory":
        data = synthetic_batch(task["patch"], task["batch"], device)
        step = make_step(build("tct", task["width"], task["patch"], task["batch"], device), data, device)
        _peak_mb(device, reset=True)
        before = _current_mb(device)  # runtime, model and batch
        for _ in range(2):  # the second step also holds Adam's state
            step()
        synchronize(device)
        peak = _peak_mb(device)
        return {"peak_mb": peak, "before_mb": before, "step_mb": peak - before}
    if task["kind"] == "sliding_window":
        return _sliding_window_child(task, device)
    raise ValueError(task["kind"])


def _peak_mb(device: torch.device, reset: bool = False) -> float:
    """Peak memory so far in MB (after ``reset``: from now on). CUDA: the allocator's peak.
    CPU: the process's peak resident set (``VmHWM``; ``reset`` writes 5 to
    /proc/self/clear_refs). Not ``ru_maxrss``: Linux carries it over from the parent across
    fork + exec, so a child started by a big parent would report the parent's size."""
    if device.type == "cuda":
        synchronize(device)
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    if reset:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
    status = _proc_status()
    if "VmHWM" in status:
        return status["VmHWM"]
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _current_mb(device: torch.device) -> float:
    """Memory in use now: CUDA allocated, or the CPU resident set (``VmRSS``)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _proc_status().get("VmRSS", float("nan"))


def _proc_status() -> dict[str, float]:
    """``VmRSS`` / ``VmHWM`` of /proc/self/status in MB (empty where there is no /proc)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) / 1024.0 for k, _, v in (line.partition(":") for line in lines) if k in ("VmRSS", "VmHWM")}


def _sliding_window_child(task: dict[str, Any], device: torch.device) -> dict[str, Any]:
    from tctseg.inference.sliding_window import sliding_window_probabilities
    from tctseg.network import SegmentationNetwork

    roi, volume_shape = tuple(task["roi"]), tuple(task["volume"])
    method = build("tct", task["width"], roi, 1, device).eval()
    torch.manual_seed(0)
    bare = SegmentationNetwork(len(CLASSES), width=task["width"], depth=5, norm="batch", aux_heads=False)
    bare = bare.to(device).to(memory_format=torch.channels_last_3d).eval()
    tile = torch.rand((1, 1, *roi)).to(device).contiguous(memory_format=torch.channels_last_3d)
    def time_tiles(warmup: int) -> list[float]:
        with torch.inference_mode():
            return time_interleaved({"bare": lambda: bare(tile, aux=False).main_logits}, device,
                                    warmup, task["tile_repeats"])["bare"]

    tile_times = time_tiles(task["warmup"])
    volume = np.random.default_rng(3).random(volume_shape, dtype=np.float32)
    windows = 0
    predict = method.predict_logits

    def counting_predict(x: torch.Tensor) -> torch.Tensor:
        nonlocal windows
        windows += x.shape[0]
        return predict(x)

    method.predict_logits = counting_predict  # instance attribute: counts MONAI's windows
    tile_peak = _peak_mb(device)
    _peak_mb(device, reset=True)
    before = _current_mb(device)
    synchronize(device)
    start = time.perf_counter()
    probs = sliding_window_probabilities(method, volume, roi, overlap=task["overlap"], device=device)
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = _peak_mb(device)
    tile_times += time_tiles(0)  # before and after the volume, so a change of load hits both sides
    tile_s = median(tile_times)
    return {
        "volume": list(volume_shape),
        "roi": list(roi),
        "overlap": task["overlap"],
        "windows": windows,
        "seconds": seconds,
        "tile_forward_s": tile_s,
        "tile_times": tile_times,
        "tiles_compute_s": windows * tile_s,
        "over_tiles": seconds / (windows * tile_s),
        "peak_mb": peak,
        "before_mb": before,
        "delta_mb": peak - before,
        "tile_forward_peak_mb": tile_peak,
        "output_mb": probs.numel() * probs.element_size() / 2**20,
    }


def run_child(task: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`_child` in a fresh interpreter; returns its JSON result."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(task)],
        capture_output=True, text=True, check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"benchmark child {task['kind']} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def bench_preprocess(volume, repeats: int) -> dict[str, Any]:
    """Seconds to normalise and resample one CT volume of ``volume`` voxels at 0.7×0.7×2.5 mm to
    the paper's 1×1×3 mm (what ``tctseg prepare`` does per scan, without the file I/O)."""
    from tctseg.preprocessing.geometry import to_prepared
    from tctseg.preprocessing.intensity import normalise_ct

    ct = np.random.default_rng(0).normal(0, 300, size=tuple(volume)).astype(np.float32)
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    times, shape = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        prepared, _ = to_prepared(normalise_ct(ct, (-1024, 1024)), affine, (1.0, 1.0, 3.0))
        times.append(time.perf_counter() - start)
        shape = list(prepared.shape)
    return {"volume": list(volume), "prepared_shape": shape, "seconds": statistics.median(times), "times": times}


def bench_loader(patch, batch: int, batches: int, workers: int | None, work_dir: Path) -> dict[str, Any]:
    """Patches per second from make_train_loader over a prepared phantom cache (tiny phantom,
    the paper's 1×1×3 mm spacing), with the trainer's default workers and augmentation."""
    from tctseg.config import TrainConfig, load_config
    from tctseg.data.augment import AugmentConfig
    from tctseg.data.phantom import write_phantom
    from tctseg.data.sampler import make_train_loader
    from tctseg.preprocessing.cache import prepare

    defaults = TrainConfig()
    workers = defaults.num_workers if workers is None else workers
    phantom = work_dir / "phantom"
    write_phantom(phantom, "tiny", seed=0)
    saved = os.environ.get("TCTSEG_PHANTOM")
    os.environ["TCTSEG_PHANTOM"] = str(phantom)  # the config's dataset paths read it
    try:
        config = load_config(REPO / "configs" / "phantom.yaml",
                             [f"cache_dir={work_dir / 'cache'}", "preprocessing.spacing=[1.0, 1.0, 3.0]"])
    finally:
        if saved is None:
            del os.environ["TCTSEG_PHANTOM"]
        else:
            os.environ["TCTSEG_PHANTOM"] = saved
    start = time.perf_counter()
    cases = prepare(config, roles=("train",), progress=False)
    prepare_s = time.perf_counter() - start
    loader = make_train_loader(
        cases, config.num_classes, tuple(patch), batch, batches + 1,
        foreground_fraction=defaults.foreground_fraction,
        augment=AugmentConfig() if defaults.augment else None,
        num_workers=workers,
    )
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)  # worker start-up and the first batch are not steady state
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    count = sum(int(b["image"].shape[0]) for b in iterator)
    seconds = time.perf_counter() - start
    return {
        "patch": list(patch), "batch": batch, "num_workers": workers, "augment": defaults.augment,
        "cases": len(cases), "case_shapes": sorted({tuple(c.image.shape) for c in cases})[:3],
        "prepare_s": prepare_s, "first_batch_s": first_s, "patches": count,
        "patches_per_s": count / seconds,
    }


# ----------------------------------------------------------------------------- main


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    patch, infer_patch = tuple(args.patch), tuple(args.infer_patch)
    started = time.perf_counter()
    result: dict[str, Any] = {"machine": machine_info(device), "paper_tab10": PAPER, "targets": TARGETS}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "child"}
    result["settings"] = settings
    sections: dict[str, Any] = {}

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {msg}", flush=True)

    log(f"training steps, width {args.width}, patch {patch}, batch {args.batch}")
    sections["train"] = bench_train_step(args.width, patch, args.batch, device, args.warmup, args.repeats)
    for width in args.extra_widths:
        log(f"training steps, width {width}")
        sections[f"train_width{width}"] = bench_train_step(width, patch, args.batch, device, args.warmup, args.repeats)
    log("loss-only forward + backward")
    sections["losses"] = bench_losses(patch, args.batch, device, args.warmup, max(args.repeats, 5))
    log("training-step peak memory (child process)")
    sections["train_memory"] = run_child({"kind": "train_memory", "device": str(device), "width": args.width,
                                          "patch": list(patch), "batch": args.batch})
    log(f"inference per patch {infer_patch}")
    sections["inference"] = bench_inference(infer_patch, args.width, device, args.warmup, args.repeats)
    log(f"sliding window over {tuple(args.volume)} (child process)")
    sections["sliding_window"] = run_child({
        "kind": "sliding_window", "device": str(device), "width": args.width, "roi": list(args.roi),
        "volume": list(args.volume), "overlap": args.overlap, "warmup": args.warmup, "tile_repeats": args.repeats,
    })
    log(f"preprocessing one {tuple(args.volume)} CT to 1×1×3 mm")
    sections["preprocess"] = bench_preprocess(args.volume, args.repeats)
    log("data loader")
    if args.work_dir is not None:
        sections["loader"] = bench_loader(patch, args.batch, args.loader_batches, args.workers, Path(args.work_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="tctseg-bench-") as tmp:
            sections["loader"] = bench_loader(patch, args.batch, args.loader_batches, args.workers, Path(tmp))
    step_patches_per_s = args.batch / sections["train"]["tct_s"]
    sections["loader"]["step_patches_per_s"] = step_patches_per_s

    train, inf, sw = sections["train"], sections["inference"], sections["sliding_window"]
    figures = {
        "train_step_tct_over_tal": train["tct_over_tal"],
        "train_step_tct_s": train["tct_s"],
        "train_step_tal_s": train["tal_s"],
        "infer_tct_over_bare": inf["tct_over_bare"],
        "infer_tct_s": inf["tct_s"],
        "infer_bare_s": inf["bare_s"],
        "infer_perclass_over_tct": inf["dodnet_over_tct"],
        "infer_dodnet_s": inf["dodnet_s"],
        "infer_naive_perclass_over_tct": inf["naive_perclass_over_tct"],
        "infer_naive_perclass_s": inf["naive_perclass_s"],
        "sliding_window_over_tiles": sw["over_tiles"],
        "sliding_window_s": sw["seconds"],
        "sliding_window_windows": sw["windows"],
        "sliding_window_peak_mem_mb": sw["peak_mb"],
        "sliding_window_mem_delta_mb": sw["delta_mb"],
        "loader_over_step": sections["loader"]["patches_per_s"] / step_patches_per_s,
        "loader_patches_per_s": sections["loader"]["patches_per_s"],
        "step_patches_per_s": step_patches_per_s,
        "train_step_peak_mem_mb": sections["train_memory"]["step_mb"],
        "train_process_peak_mem_mb": sections["train_memory"]["peak_mb"],
        "loss_tct_ms": sections["losses"]["tct_ms"],
        "loss_tal_ms": sections["losses"]["tal_ms"],
        "preprocess_ct_s": sections["preprocess"]["seconds"],
    }
    # on a busy machine single rounds vary by up to 2×: the ratio of the fastest rounds as well
    figures["train_step_tct_over_tal_min"] = min(train["times"]["tct"]) / min(train["times"]["tal"])
    figures["infer_tct_over_bare_min"] = min(inf["times"]["tct"]) / min(inf["times"]["bare"])
    for width in args.extra_widths:
        t = sections[f"train_width{width}"]
        figures[f"train_step_tct_over_tal_width{width}"] = t["tct_over_tal"]
        figures[f"train_step_tct_s_width{width}"] = t["tct_s"]
        figures[f"train_step_tal_s_width{width}"] = t["tal_s"]
    result["figures"] = figures
    result["sections"] = sections
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = time.perf_counter() - started
    log("done")
    return result


def markdown(result: dict[str, Any]) -> str:
    """The summary table of latest.md."""
    m, f, s = result["machine"], result["figures"], result["settings"]
    lines = [
        "# tctseg benchmarks (latest run)",
        "",
        f"- date: {m['date']}; device: {m['device']}" + (f" ({m['gpu']})" if m["gpu"] else ""),
        f"- CPU: {m['cpu']}, {m['cpu_count']} cores, torch threads {m['torch_threads']}; torch {m['torch']}, monai {m['monai']}",
        f"- load average at start {m['load_average']}, at end {m.get('load_average_end')}",
        f"- median of {s['repeats']} runs after {s['warmup']} warm-up; whole run {result['wall_s']:.0f} s",
        "",
        "| figure | value | target / paper | setting |",
        "|---|---:|---|---|",
    ]
    width, patch, batch = s["width"], "×".join(map(str, s["patch"])), s["batch"]
    infer = "×".join(map(str, s["infer_patch"]))
    vol, roi = "×".join(map(str, s["volume"])), "×".join(map(str, s["roi"]))
    rows = [
        ("train_step_tct_over_tal", f"{f['train_step_tct_over_tal']:.3f}", f"≤ 1.05; paper {PAPER['train_step_tct_over_tal']}",
         f"width {width}, {patch}, batch {batch}: TCT {f['train_step_tct_s']:.2f} s, TAL {f['train_step_tal_s']:.2f} s"),
    ]
    for w in s["extra_widths"]:
        rows.append((f"train_step_tct_over_tal (width {w})", f"{f[f'train_step_tct_over_tal_width{w}']:.3f}", "≤ 1.05",
                     f"TCT {f[f'train_step_tct_s_width{w}']:.2f} s, TAL {f[f'train_step_tal_s_width{w}']:.2f} s"))
    rows += [
        ("train_step_peak_mem_mb", f"{f['train_step_peak_mem_mb']:.0f}", "", f"TCT step, width {width}, {patch}, batch {batch} (process peak {f['train_process_peak_mem_mb']:.0f} MB)"),
        ("loss TCT / TAL (ms)", f"{f['loss_tct_ms']:.0f} / {f['loss_tal_ms']:.0f}", "", "loss-only forward + backward"),
        ("train_step_tct_over_tal (fastest rounds)", f"{f['train_step_tct_over_tal_min']:.3f}", "", "min over rounds, same run"),
        ("infer_tct_over_bare", f"{f['infer_tct_over_bare']:.3f}", "1.00 ± noise; paper 0.96/0.96 s",
         f"{infer}: TCT {f['infer_tct_s']:.2f} s, bare {f['infer_bare_s']:.2f} s"),
        ("infer_tct_over_bare (fastest rounds)", f"{f['infer_tct_over_bare_min']:.3f}", "", "min over rounds, same run"),
        ("infer_perclass_over_tct", f"{f['infer_perclass_over_tct']:.2f}", f"paper {PAPER['infer_perclass_over_tct']}",
         f"DoDNet (backbone once, dynamic head ×N) {f['infer_dodnet_s']:.2f} s"),
        ("infer_naive_perclass_over_tct", f"{f['infer_naive_perclass_over_tct']:.2f}", "",
         f"backbone pass per class (N = {len(CLASSES)}) {f['infer_naive_perclass_s']:.2f} s"),
        ("sliding_window_over_tiles", f"{f['sliding_window_over_tiles']:.3f}", "≤ 1.15",
         f"{vol}, roi {roi}, overlap {s['overlap']}: {f['sliding_window_s']:.1f} s, {f['sliding_window_windows']} windows"),
        ("sliding_window_peak_mem_mb", f"{f['sliding_window_peak_mem_mb']:.0f}", "",
         f"process peak; +{f['sliding_window_mem_delta_mb']:.0f} MB over the resident model after warm-up"),
        ("preprocess_ct_s", f"{f['preprocess_ct_s']:.2f}", "",
         f"normalise + resample one {vol} CT at 0.7×0.7×2.5 mm to 1×1×3 mm"),
        ("loader_over_step", f"{f['loader_over_step']:.2f}", "≥ 2",
         f"{f['loader_patches_per_s']:.1f} patches/s delivered vs {f['step_patches_per_s']:.2f} consumed"),
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--width", type=int, default=16, help="U-Net width (paper: 16)")
    p.add_argument("--extra-widths", type=int, nargs="*", default=[8], help="also time training at these widths")
    p.add_argument("--patch", type=int, nargs=3, default=None, help="training patch X Y Z (CPU default 96 96 32; cuda 192 192 64)")
    p.add_argument("--batch", type=int, default=None, help="training batch (CPU default 2; cuda 4)")
    p.add_argument("--infer-patch", type=int, nargs=3, default=[192, 192, 64], help="inference patch (paper 192 192 64)")
    p.add_argument("--volume", type=int, nargs=3, default=[512, 512, 100], help="sliding-window volume X Y Z")
    p.add_argument("--roi", type=int, nargs=3, default=[192, 192, 64], help="sliding-window roi")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: train.num_workers's default)")
    p.add_argument("--loader-batches", type=int, default=20)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny sizes to check the script (timings meaningless)")
    p.add_argument("--work-dir", type=Path, default=None, help="folder for the loader's phantom and cache (default: a temporary one)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for latest.json / latest.md")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.patch is None:
        args.patch = [192, 192, 64] if cuda else [96, 96, 32]
    if args.batch is None:
        args.batch = 4 if cuda else 2
    if args.quick:
        args.width, args.extra_widths = 4, []
        args.patch, args.infer_patch, args.roi, args.volume = [32, 32, 16], [32, 32, 16], [32, 32, 16], [48, 48, 24]
        args.batch, args.warmup, args.repeats, args.loader_batches = 2, 1, 1, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(_child(json.loads(args.child))), flush=True)
        return 0
    result = run_all(args)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in (("latest.json", json.dumps(result, indent=2, default=str) + "\n"), ("latest.md", markdown(result))):
        partial = args.out / f"{name}.tmp"  # a run killed half-way leaves the previous results whole
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, args.out / name)
    print(markdown(result))
    print(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
