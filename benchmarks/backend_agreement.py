"""Do the inference backends give eager PyTorch's label maps on trained models? (issue 30, item 4)

    python benchmarks/backend_agreement.py CONFIG CHECKPOINT [CHECKPOINT ...] [--backends openvino,openvino-bf16]

Every checkpoint predicts the config's validation and test subjects with ``--backend torch``
and with each other backend (:mod:`tctseg.inference.backends`) through the library's
``predict_cases``; per (checkpoint, case, organ) the DSC between the backend's label map and
PyTorch's (the agreement, issue 30's ≥ 0.99), and both maps' DSC against the manual label
(what the difference costs in accuracy), with seconds per case. This measures agreement,
not accuracy, and chooses nothing, so the test subjects are used too. Writes
benchmarks/results/backend_agreement.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "backend_agreement.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--backends", default="onnxruntime,openvino,openvino-bf16")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from tctseg.config import load_config
    from tctseg.data.conversion import find_cases
    from tctseg.data.io import load_volume
    from tctseg.inference import PredictionInput, predict_cases
    from tctseg.metrics.masks import dice

    config = load_config(args.config)
    cases = [c for role in ("validation", "test") for d in config.datasets_with_role(role)
             for c in find_cases(d, config.classes)]
    truth = {c.case_id: np.asarray(c.load()[1]) for c in cases}
    inputs = [PredictionInput(c.case_id, c.image) for c in cases]
    backends = ["torch"] + [b for b in args.backends.split(",") if b]
    rows, seconds = [], {}
    with tempfile.TemporaryDirectory(prefix="tctseg-agreement-") as folder:
        for checkpoint in args.checkpoints:
            maps = {}
            for backend in backends:
                out = Path(folder) / f"{checkpoint.parent.name}_{backend}"
                start = time.perf_counter()
                results = predict_cases(checkpoint, inputs, out, progress=False, backend=backend)
                seconds[f"{checkpoint}|{backend}"] = (time.perf_counter() - start) / len(cases)
                maps[backend] = {r.case_id: np.asarray(load_volume(r.prediction, integer=True).array) for r in results}
            for backend in backends[1:]:
                for case_id, reference in maps["torch"].items():
                    got = maps[backend][case_id]
                    for class_id, organ in enumerate(config.classes, start=1):
                        rows.append({
                            "checkpoint": str(checkpoint), "backend": backend, "case_id": case_id, "organ": organ,
                            "agreement_dsc": round(dice(got == class_id, reference == class_id), 5),
                            "voxels_differing": int(((got == class_id) != (reference == class_id)).sum()),
                            "dsc_torch": round(dice(reference == class_id, truth[case_id] == class_id), 4),
                            "dsc_backend": round(dice(got == class_id, truth[case_id] == class_id), 4),
                        })
    summary = {}
    for backend in backends[1:]:
        mine = [r for r in rows if r["backend"] == backend]
        summary[backend] = {
            "pairs": len(mine),
            "min_agreement_dsc": min(r["agreement_dsc"] for r in mine),
            "mean_agreement_dsc": round(float(np.mean([r["agreement_dsc"] for r in mine])), 5),
            "mean_dsc_torch": round(float(np.mean([r["dsc_torch"] for r in mine])), 4),
            "mean_dsc_backend": round(float(np.mean([r["dsc_backend"] for r in mine])), 4),
            "seconds_per_case": round(float(np.mean([v for k, v in seconds.items() if k.endswith("|" + backend)])), 1),
        }
        s = summary[backend]
        print(f"{backend:14s} agreement with torch per (case, organ): min {s['min_agreement_dsc']:.4f}, mean "
              f"{s['mean_agreement_dsc']:.4f} over {s['pairs']}; DSC to the manual labels {100 * s['mean_dsc_backend']:.2f} "
              f"% vs torch {100 * s['mean_dsc_torch']:.2f} %; {s['seconds_per_case']:.1f} s per case")
    torch_seconds = float(np.mean([v for k, v in seconds.items() if k.endswith("|torch")]))
    print(f"torch          {torch_seconds:.1f} s per case")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": str(args.config), "checkpoints": [str(c) for c in args.checkpoints],
                                    "cases": [c.case_id for c in cases], "torch_seconds_per_case": round(torch_seconds, 1),
                                    "summary": summary, "rows": rows}, indent=2) + "\n")
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
