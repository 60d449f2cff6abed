"""Predict one whole-body-sized CT with the paper's network: wall time, peak memory, where the time goes (issue 19 item 6).

    python benchmarks/predict_big_ct.py                  # 512×512×600 at 0.8×0.8×1 mm (the issue's scan)
    python benchmarks/predict_big_ct.py --quick          # 96×96×60: checks the script, timings meaningless
    python benchmarks/predict_big_ct.py --device cuda    # the same on a GPU
    python benchmarks/predict_big_ct.py --backend onnxruntime --overlap 0.25   # issue 30's levers

The scan is synthetic (an ellipse of soft tissue with two brighter blobs, HU, int16, gzipped
NIfTI) and the weights untrained: predict's cost does not depend on either. The network is
the paper's (configs/paper_ct.yaml: TCT, U-Net width 16 depth 5, 5 classes, 192×192×64
windows, overlap 0.5, 1×1×3 mm). Each phase is the function ``tctseg predict`` calls, in its
order (:func:`tctseg.inference.predict.predict_cases`):

- ``read``: :func:`~tctseg.data.io.load_volume` of the .nii.gz;
- ``resample_in``: :func:`~tctseg.inference.predict.prepare_image` (CT clip/scale, RAS,
  trilinear to 1×1×3 mm);
- ``windows``: :func:`~tctseg.inference.sliding_window.sliding_window_probabilities`
  (Gaussian blending; the window count is recorded);
- ``resample_out``: :func:`~tctseg.inference.export.labels_in_original_space` (each class's
  probability back to the original grid, running argmax);
- ``write``: :func:`~tctseg.data.io.save_nifti` of the uint8 label map.

With ``--backend onnxruntime|openvino|openvino-bf16`` the network is exported to ONNX first,
in a process of its own (as predict does once per checkpoint and caches: the export is timed
and reported apart, ``export_s``), and the measured process starts with a ``load`` phase
(the engine reads and compiles the ONNX file) before the windows run through it
(:mod:`tctseg.inference.backends`). ``--overlap`` replaces the config's 0.5; ``--threads``
sets torch's (and the backend's) threads.

The measurement runs in a fresh child process, so its peak resident set (``VmHWM``) is
predict's alone; it is recorded after every phase (so the column is the peak so far).
Writes ``benchmarks/results/predict_big_ct.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "predict_big_ct.json"
PAPER_CONFIG = REPO / "configs" / "paper_ct.yaml"
FULL_SHAPE, QUICK_SHAPE = (512, 512, 600), (96, 96, 60)
SPACING = (0.8, 0.8, 1.0)
AIM = {"wall_s": 180, "peak_mb": 8 * 1024}  # the aim on 2 idle cores


def synthetic_ct(shape: tuple[int, int, int], spacing: tuple[float, float, float], path: Path) -> Path:
    """Write an int16 HU volume [X, Y, Z]: air, a body ellipse (40 HU), two organ-like blobs (60, 150 HU)."""
    import nibabel as nib

    x, y = np.meshgrid(np.linspace(-1, 1, shape[0], dtype=np.float32), np.linspace(-1, 1, shape[1], dtype=np.float32),
                       indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1
    volume = np.full(shape, -1000, dtype=np.int16)
    rng = np.random.default_rng(0)
    for k in range(shape[2]):
        z = 2 * k / max(shape[2] - 1, 1) - 1
        plane = np.where(body, 40, -1000).astype(np.int16)
        plane[((x - 0.3) ** 2 + (y + 0.1) ** 2 + z**2) < 0.1] = 60  # "liver"
        plane[((x + 0.4) ** 2 + (y - 0.2) ** 2 + (z - 0.3) ** 2) < 0.02] = 150  # "kidney"
        volume[:, :, k] = plane + rng.integers(-20, 21, size=shape[:2], dtype=np.int16)
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), path)
    return path


def paper_model(device: str):
    """TCT with the paper's network and settings (configs/paper_ct.yaml), untrained weights."""
    import torch

    from tctseg.config import load_config
    from tctseg.methods import build_method

    config = load_config(PAPER_CONFIG)
    torch.manual_seed(0)
    return build_method(config).to(device).eval(), config


def _vm_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1]) / 1024.0
    return float("nan")


def export_network(path: Path) -> float:
    """Export the paper network's ``predict_logits`` to ``path`` (what predict caches); seconds."""
    from tctseg.inference.backends import export_onnx

    method, config = paper_model("cpu")
    start = time.perf_counter()
    export_onnx(method, "predict_logits", config.train.patch_size, path)
    return time.perf_counter() - start


def measure(scan: Path, out: Path, device: str, backend: str = "torch", overlap: float | None = None,
            onnx: Path | None = None) -> dict[str, Any]:
    """Run predict's phases on ``scan`` in this process; seconds and peak memory after each."""
    import torch

    from tctseg.data.io import load_volume, save_nifti
    from tctseg.inference.export import labels_in_original_space
    from tctseg.inference.predict import prepare_image
    from tctseg.inference.sliding_window import sliding_window_probabilities

    method, config = paper_model(device)
    phases: dict[str, dict[str, float]] = {}
    baseline_mb = _vm_mb("VmHWM")
    start = time.perf_counter()

    def done(name: str, since: float) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        phases[name] = {"s": round(now - since, 2), "peak_mb_so_far": round(_vm_mb("VmHWM"), 1)}
        if device == "cuda":
            phases[name]["cuda_peak_mb_so_far"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return now

    network = None
    if backend != "torch":
        from tctseg.inference.backends import ExportedNetwork

        t = time.perf_counter()
        network = ExportedNetwork(onnx, backend, "predict_logits")
        with torch.inference_mode():
            network(torch.zeros(1, 1, *config.train.patch_size))  # the engine compiles on its first call
        done("load", t)
    t = time.perf_counter()
    volume = load_volume(scan)
    t = done("read", t)
    image, geometry = prepare_image(volume, "CT", config)
    shape, spacing, affine = list(volume.shape), [round(s, 4) for s in volume.spacing], volume.affine
    del volume  # as predict does without reports: only the affine is needed again
    t = done("resample_in", t)
    settings = config.inference
    overlap = settings.overlap if overlap is None else overlap
    probabilities = sliding_window_probabilities(
        method, image, config.train.patch_size, overlap=overlap, sw_batch_size=settings.sw_batch_size,
        device=device, channels_last=config.network.channels_last, progress=True, network=network,
    ).numpy()
    del image
    t = done("windows", t)
    labels, _, _ = labels_in_original_space(probabilities, geometry)
    del probabilities
    t = done("resample_out", t)
    save_nifti(labels, affine, out)
    done("write", t)
    return {
        "scan_shape": shape,
        "scan_spacing_mm": spacing,
        "prepared_shape": list(geometry.prepared_shape),
        "windows": _window_count(geometry.prepared_shape, config.train.patch_size, overlap),
        "patch": list(config.train.patch_size),
        "overlap": overlap,
        "backend": backend,
        "wall_s": round(time.perf_counter() - start, 2),
        "peak_mb": round(_vm_mb("VmHWM"), 1),
        "model_resident_mb": round(baseline_mb, 1),
        "phases": phases,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }


def _window_count(shape, patch, overlap: float) -> int:
    """Windows MONAI's sliding_window_inference places (its scan interval rule)."""
    count = 1
    for size, roi in zip(shape, patch):
        roi = min(roi, size)
        interval = max(int(roi * (1 - overlap)), 1)
        count *= int(np.ceil((size - roi) / interval)) + 1 if size > roi else 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_SHAPE} scan instead of {FULL_SHAPE}")
    parser.add_argument("--shape", type=int, nargs=3, help="scan shape (overrides --quick)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "openvino", "openvino-bf16"))
    parser.add_argument("--overlap", type=float, help="window overlap (default: the config's, 0.5)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/predict_big_ct[_<backend>][_overlap<o>].json)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child: the scan to predict
    parser.add_argument("--onnx", type=Path, help=argparse.SUPPRESS)  # the child: the exported network
    parser.add_argument("--export-to", type=Path, help=argparse.SUPPRESS)  # the exporting child
    args = parser.parse_args(argv)
    if args.export_to is not None:
        print(json.dumps({"export_s": round(export_network(args.export_to), 2)}))
        return 0
    if args.measure is not None:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        result = measure(args.measure, args.measure.with_name("prediction.nii.gz"), args.device, args.backend,
                         args.overlap, args.onnx)
        print(json.dumps(result))
        return 0

    import torch
    from run import machine_info  # benchmarks/run.py, beside this script: one description of the machine

    shape = tuple(args.shape) if args.shape else QUICK_SHAPE if args.quick else FULL_SHAPE
    with tempfile.TemporaryDirectory(prefix="tctseg-bigct-") as folder:
        t = time.perf_counter()
        scan = synthetic_ct(shape, SPACING, Path(folder) / "scan.nii.gz")
        print(f"synthetic scan {shape} at {SPACING} mm written in {time.perf_counter() - t:.1f} s", flush=True)
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        export = {}
        onnx = Path(folder) / "network.onnx"
        if args.backend != "torch":
            exporter = subprocess.run([sys.executable, __file__, "--export-to", str(onnx)], env=env,
                                      stdout=subprocess.PIPE, text=True, check=True)
            export = json.loads(exporter.stdout.strip().splitlines()[-1])
        child = subprocess.run(
            [sys.executable, __file__, "--measure", str(scan), "--device", args.device, "--backend", args.backend,
             *(["--onnx", str(onnx)] if args.backend != "torch" else []),
             *(["--overlap", str(args.overlap)] if args.overlap is not None else []),
             *(["--threads", str(args.threads)] if args.threads else [])],
            env=env, stdout=subprocess.PIPE, text=True, check=True,
        )
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result.update(export)
    result["quick"] = shape != FULL_SHAPE
    result["aim"] = AIM
    result["machine"] = machine_info(torch.device(args.device))
    if args.out is None:
        suffix = ("" if args.backend == "torch" else f"_{args.backend}") + (
            "" if args.overlap is None else f"_overlap{args.overlap:g}")
        args.out = RESULTS.with_name(f"predict_big_ct{suffix}.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("scan_shape", "prepared_shape", "windows", "wall_s", "peak_mb")}))
    for name, phase in result["phases"].items():
        print(f"  {name:13s} {phase['s']:8.2f} s   peak so far {phase['peak_mb_so_far']:8.1f} MB")
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
