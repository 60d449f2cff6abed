"""Does ``tctseg predict --qc`` tell good organs from bad ones? Measured on held-out real scans.

For every checkpoint and every validation and test subject of CONFIG, the scan is predicted
through the library with ``--qc`` (``predict_cases(..., reports=ReportOptions(qc=True))``),
and each (case, organ) pair gets its true DSC against the manual label (original space)
beside its two QC signals: the two-head agreement (checkpoints with auxiliary heads, TCT) and
the confidence baseline (mean max-softmax probability inside the predicted organ; an organ
predicted nowhere has no confidence and counts as 0, the least trust). Over the pairs:
Spearman's ρ(signal, DSC) and the AUROC of a low signal for DSC < 0.7
(:mod:`tctseg.metrics.ranking`), both signals on the same pairs, plus the confidence alone
over every checkpoint's pairs. A checkpoint whose predictions equal an earlier one's (a
best checkpoint that is also the last, or the same run under two names) is left out, so no
pair is counted twice. Writes ``qc_validation.json`` (every pair) and
``qc_validation.md`` (the table) into OUTPUT.

    python scripts/qc_validation.py configs/chaos_t2.yaml OUTPUT CHECKPOINT [CHECKPOINT ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tctseg.config import load_config
from tctseg.data.conversion import find_cases
from tctseg.data.io import load_volume
from tctseg.metrics.masks import dice
from tctseg.metrics.ranking import auroc_for_low, spearman
from tctseg.inference import PredictionInput, predict_cases
from tctseg.layout import PredictionsLayout
from tctseg.predict_options import DEFAULT_QC_THRESHOLD, ReportOptions
from tctseg.checkpoint import load_method_from_checkpoint

POOR_DSC = 0.7  # a prediction below this DSC is one the flag should catch


def held_out_cases(config_path: Path) -> tuple[list[str], list]:
    """The config's classes and its validation + test cases (``SourceCase``, with labels)."""
    config = load_config(config_path)
    cases = []
    for role in ("validation", "test"):
        for dataset in config.datasets_with_role(role):
            cases += find_cases(dataset, config.classes)
    return config.classes, cases


def score_checkpoint(checkpoint: Path, cases: list, ground_truth: dict[str, np.ndarray], work: Path) -> list[dict]:
    """Predict every case with --qc; one row per (case, organ): DSC, agreement, confidence."""
    method, config = load_method_from_checkpoint(checkpoint, device="cpu")
    inputs = [PredictionInput(c.case_id, c.image) for c in cases]
    results = predict_cases((method, config), inputs, work, reports=ReportOptions(qc=True), overwrite=True, progress=False)
    failed = [f"{r.case_id}: {r.error}" for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{checkpoint}: prediction failed: {'; '.join(failed)}")
    quality = json.loads(PredictionsLayout(work).qc_json.read_text(encoding="utf-8"))["cases"]
    rows = []
    for case in cases:
        predicted = np.asarray(load_volume(PredictionsLayout(work).label_map(case.case_id), integer=True).array)
        for class_id, organ in enumerate(config.classes, start=1):
            q = quality[case.case_id][organ]
            rows.append({
                "checkpoint": str(checkpoint),
                "method": config.method.name,
                "case_id": case.case_id,
                "organ": organ,
                "dsc": round(dice(predicted == class_id, ground_truth[case.case_id] == class_id), 4),
                "agreement": q["agreement"],
                "confidence": 0.0 if q["confidence"] is None else q["confidence"],
            })
    return rows


def summarise(rows: list[dict], signal: str) -> dict:
    dsc = [r["dsc"] for r in rows]
    values = [r[signal] for r in rows]
    return {
        "pairs": len(rows),
        "poor_pairs": int(sum(d < POOR_DSC for d in dsc)),
        "spearman": round(spearman(values, dsc), 3),
        "auroc": round(auroc_for_low(values, dsc, POOR_DSC), 3),
    }


def flag_counts(rows: list[dict], threshold: float) -> dict:
    """How the default agreement flag splits poor and good pairs."""
    poor = [r for r in rows if r["dsc"] < POOR_DSC]
    good = [r for r in rows if r["dsc"] >= POOR_DSC]
    return {
        "threshold": threshold,
        "poor_flagged": sum(r["agreement"] < threshold for r in poor),
        "poor": len(poor),
        "good_flagged": sum(r["agreement"] < threshold for r in good),
        "good": len(good),
    }


def markdown(summary: dict) -> str:
    lines = [
        f"| pairs | signal | n (DSC < {POOR_DSC}) | Spearman ρ with DSC | AUROC for DSC < {POOR_DSC} |",
        "|---|---|---|---|---|",
    ]
    for name, key, group in (
        ("TCT checkpoints", "agreement", "two_heads"),
        ("TCT checkpoints", "confidence", "two_heads"),
        ("all checkpoints", "confidence", "all"),
    ):
        s = summary[group].get(key)
        if s:
            lines.append(f"| {name} | {key} | {s['pairs']} ({s['poor_pairs']}) | {s['spearman']} | {s['auroc']} |")
    by_organ = summary.get("two_heads_by_organ") or {}
    if by_organ:
        lines += ["", "TCT checkpoints, per organ (Spearman ρ / AUROC):", "",
                  "| organ | pairs (DSC < 0.7) | agreement | confidence |", "|---|---|---|---|"]
        for organ, s in by_organ.items():
            a, c = s["agreement"], s["confidence"]
            lines.append(f"| {organ} | {a['pairs']} ({a['poor_pairs']}) | {a['spearman']} / {a['auroc']} | {c['spearman']} / {c['auroc']} |")
    flags = summary.get("agreement_flag")
    if flags:
        lines.append("")
        lines.append(
            f"Agreement flag at {flags['threshold']}: {flags['poor_flagged']} of {flags['poor']} poor pairs flagged, "
            f"{flags['good_flagged']} of {flags['good']} good pairs flagged."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    classes, cases = held_out_cases(args.config)
    ground_truth = {c.case_id: np.asarray(c.load()[1]) for c in cases}
    rows: list[dict] = []
    two_heads: list[dict] = []
    seen: dict[tuple, Path] = {}
    duplicates: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, checkpoint in enumerate(args.checkpoints):
            work = Path(tmp) / f"checkpoint_{i}"
            scored = score_checkpoint(checkpoint, cases, ground_truth, work)
            key = tuple((r["case_id"], r["organ"], r["dsc"], r["confidence"], r["agreement"]) for r in scored)
            if key in seen:
                duplicates[str(checkpoint)] = str(seen[key])
                print(f"{checkpoint}: predicts what {seen[key]} predicts; left out", flush=True)
                continue
            seen[key] = checkpoint
            rows += scored
            if all(r["agreement"] is not None for r in scored):
                two_heads += scored
            print(f"{checkpoint}: mean DSC {np.mean([r['dsc'] for r in scored]):.3f}", flush=True)
    summary = {
        "cases": [c.case_id for c in cases],
        "classes": classes,
        "checkpoints": [str(c) for c in seen.values()],
        "left_out_as_duplicates": duplicates,
        "two_heads": {"agreement": summarise(two_heads, "agreement"), "confidence": summarise(two_heads, "confidence")}
        if two_heads else {},
        "all": {"confidence": summarise(rows, "confidence")},
        "two_heads_by_organ": {
            organ: {signal: summarise([r for r in two_heads if r["organ"] == organ], signal) for signal in ("agreement", "confidence")}
            for organ in classes
        } if two_heads else {},
        "agreement_flag": flag_counts(two_heads, DEFAULT_QC_THRESHOLD) if two_heads else None,
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "qc_validation.json").write_text(json.dumps({"summary": summary, "pairs": rows}, indent=2) + "\n")
    (args.output / "qc_validation.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
