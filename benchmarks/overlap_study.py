"""Sliding-window overlap against accuracy and time, with trained models (issue 30, item 2).

    python benchmarks/overlap_study.py CONFIG CHECKPOINT [CHECKPOINT ...] [--overlaps 0.5,0.33,0.25] [--role validation]
                                       [--patch 48,48,16]

Each checkpoint predicts the config's ``--role`` cases (default: the validation subjects, on
which settings are chosen; the test subjects are left for the final tables) at every overlap
through the library's ``predict_cases``, and each (case, organ) gets its DSC and HD95 against
the manual label in the scan's own space (``evaluation.evaluate_case``), beside the
prediction's seconds. Printed and written as a table per overlap: mean DSC and HD95 per organ
over checkpoints × cases, their change against the first overlap, and seconds per case.
``--patch``: windows of another size than the checkpoints were trained with (the network is
fully convolutional). On CHAOS at 3×3×6 mm a prepared scan (about 120×120×45 voxels) holds
at most two of the 96×96×32 training windows per axis, placed at its two ends whatever the
overlap, so overlap changes nothing there; with 48×48×16 windows it holds 3–5 per axis, as
the whole-body CT holds 192×192×64 windows (3×3×4 at overlap 0.25, 4×4×6 at 0.5). Windows
smaller than trained change the instance norms' statistics, so DSC drops against the
trained patch; the comparison between overlaps at one window size is what this measures.
Writes benchmarks/results/overlap_study.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "overlap_study.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--overlaps", default="0.5,0.33,0.25")
    parser.add_argument("--role", default="validation", choices=("validation", "test"))
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--patch", help="window X,Y,Z (default: each checkpoint's training patch)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import dataclasses

    from tctseg.checkpoint import load_method_from_checkpoint
    from tctseg.config import load_config
    from tctseg.data.conversion import find_cases
    from tctseg.data.io import affine_spacing, load_volume
    from tctseg.evaluation.evaluate import evaluate_case
    from tctseg.inference import PredictionInput, predict_cases

    config = load_config(args.config)
    overlaps = [float(o) for o in args.overlaps.split(",")]
    cases = [c for d in config.datasets_with_role(args.role) for c in find_cases(d, config.classes)]
    truth = {}
    for c in cases:
        image, label = c.load()
        truth[c.case_id] = (np.asarray(label), load_volume(c.image))
    rows = []
    with tempfile.TemporaryDirectory(prefix="tctseg-overlap-") as folder:
        for index, checkpoint in enumerate(args.checkpoints):
            method, model_config = load_method_from_checkpoint(checkpoint, device="cpu")
            if args.patch:
                patch = tuple(int(v) for v in args.patch.split(","))
                model_config = dataclasses.replace(model_config, train=dataclasses.replace(model_config.train, patch_size=patch))
            for overlap in overlaps:
                out = Path(folder) / f"model{index}_{overlap:g}"
                start = time.perf_counter()
                results = predict_cases((method, model_config), [PredictionInput(c.case_id, c.image) for c in cases], out,
                                        overlap=overlap, progress=False, backend=args.backend)
                seconds = time.perf_counter() - start
                for r in results:
                    label, volume = truth[r.case_id]
                    predicted = np.asarray(load_volume(r.prediction, integer=True).array)
                    scores = evaluate_case(predicted, label, affine_spacing(volume.affine), range(1, len(config.classes) + 1))
                    for class_id, s in scores.items():
                        rows.append({"checkpoint": str(checkpoint), "overlap": overlap, "case_id": r.case_id,
                                     "organ": config.classes[class_id - 1], "dsc": s["dsc"], "hd95": s["hd95"],
                                     "seconds_per_case": seconds / len(cases)})
                print(f"{checkpoint} overlap {overlap:g}: {seconds / len(cases):.1f} s per case, mean DSC "
                      f"{np.mean([x['dsc'] for x in rows if x['checkpoint'] == str(checkpoint) and x['overlap'] == overlap]):.4f}",
                      flush=True)
    table = []
    for overlap in overlaps:
        here = [r for r in rows if r["overlap"] == overlap]
        entry = {"overlap": overlap, "seconds_per_case": round(float(np.mean([r["seconds_per_case"] for r in here])), 1),
                 "mean_dsc": round(float(np.mean([r["dsc"] for r in here])), 4),
                 "mean_hd95": round(float(np.mean([r["hd95"] for r in here])), 2), "per_organ": {}}
        for organ in config.classes:
            mine = [r for r in here if r["organ"] == organ]
            entry["per_organ"][organ] = {"dsc": round(float(np.mean([r["dsc"] for r in mine])), 4),
                                         "hd95": round(float(np.mean([r["hd95"] for r in mine])), 2)}
        table.append(entry)
    first = table[0]
    print(f"\n{len(args.checkpoints)} checkpoint(s) × {len(cases)} {args.role} case(s); DSC in %, HD95 in mm; "
          f"Δ against overlap {first['overlap']:g}")
    print("| overlap | s per case | " + " | ".join(f"{o} DSC / HD95" for o in config.classes) + " | mean DSC (Δ) | mean HD95 (Δ) |")
    print("|---" * (len(config.classes) + 4) + "|")
    for e in table:
        cells = " | ".join(f"{100 * e['per_organ'][o]['dsc']:.2f} / {e['per_organ'][o]['hd95']:.1f}" for o in config.classes)
        print(f"| {e['overlap']:g} | {e['seconds_per_case']:.1f} | {cells} | {100 * e['mean_dsc']:.2f} "
              f"({100 * (e['mean_dsc'] - first['mean_dsc']):+.2f}) | {e['mean_hd95']:.2f} ({e['mean_hd95'] - first['mean_hd95']:+.2f}) |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": str(args.config), "role": args.role, "backend": args.backend,
                                    "patch": args.patch or "training patch",
                                    "checkpoints": [str(c) for c in args.checkpoints], "table": table, "rows": rows},
                                   indent=2) + "\n")
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
