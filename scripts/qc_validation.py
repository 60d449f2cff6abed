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
pair is counted twice.

Ensembles (issue 27): the checkpoints of one method (two or more, e.g. its five seeds'
``checkpoint_best.pt``) also predict every case together, as ``tctseg predict A.pt B.pt ...
--qc`` does; each (case, organ) of the ensemble's label map gets its DSC beside the ensemble
agreement (the members' mean pairwise DSC) and the ensemble's confidence. Each signal is
judged on the predictions it vouches for: the ensemble's signals on the ensemble's label
maps, the single-model ones on each member's. Beside Spearman's ρ and the AUROC, the area
under the risk–coverage curve (AURC, risk 1 − DSC; lower is better) with the two bounds that
make it readable: the optimal AURC of those pairs (ordered by their true DSC) and the
random one (the mean risk). Writes ``qc_validation.json`` (every pair) and
``qc_validation.md`` (the tables) into OUTPUT.

    python scripts/qc_validation.py configs/chaos_t2.yaml OUTPUT CHECKPOINT [CHECKPOINT ...] [--no-ensembles]
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
from tctseg.files.layout import PredictionsLayout
from tctseg.metrics.masks import dice
from tctseg.metrics.ranking import auroc_for_low, aurc, aurc_optimal, spearman
from tctseg.inference import PredictionInput, predict_cases
from tctseg.predict_options import DEFAULT_QC_THRESHOLD, ENSEMBLE_QC_THRESHOLD, ReportOptions
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


def score_checkpoint(checkpoint: Path | list[Path], cases: list, ground_truth: dict[str, np.ndarray], work: Path) -> list[dict]:
    """Predict every case with --qc; one row per (case, organ): DSC, the QC signals.

    ``checkpoint``: one checkpoint, or a list of them predicting as an ensemble (then each
    row also has ``ensemble_agreement``).
    """
    members = checkpoint if isinstance(checkpoint, list) else [checkpoint]
    _, config = load_method_from_checkpoint(members[0], device="cpu")
    inputs = [PredictionInput(c.case_id, c.image) for c in cases]
    model = members if len(members) > 1 else members[0]
    results = predict_cases(model, inputs, work, reports=ReportOptions(qc=True), overwrite=True, progress=False)
    failed = [f"{r.case_id}: {r.error}" for r in results if not r.ok]
    name = " + ".join(str(m) for m in members)
    if failed:
        raise RuntimeError(f"{name}: prediction failed: {'; '.join(failed)}")
    predictions = PredictionsLayout(work)
    quality = json.loads(predictions.qc_json.read_text(encoding="utf-8"))["cases"]
    rows = []
    for case in cases:
        predicted = np.asarray(load_volume(predictions.label_map(case.case_id), integer=True).array)
        for class_id, organ in enumerate(config.classes, start=1):
            q = quality[case.case_id][organ]
            row = {
                "checkpoint": name,
                "method": config.method.name,
                "case_id": case.case_id,
                "organ": organ,
                "dsc": round(dice(predicted == class_id, ground_truth[case.case_id] == class_id), 4),
                "agreement": q["agreement"],
                "confidence": 0.0 if q["confidence"] is None else q["confidence"],
            }
            if len(members) > 1:
                row["members"] = [str(m) for m in members]
                row["ensemble_agreement"] = q["ensemble_agreement"]
            rows.append(row)
    return rows


def summarise(rows: list[dict], signal: str) -> dict:
    dsc = [r["dsc"] for r in rows]
    values = [r[signal] for r in rows]
    return {
        "pairs": len(rows),
        "poor_pairs": int(sum(d < POOR_DSC for d in dsc)),
        "spearman": round(spearman(values, dsc), 3),
        "auroc": round(auroc_for_low(values, dsc, POOR_DSC), 3),
        "aurc": round(aurc(values, dsc), 4),
        "aurc_optimal": round(aurc_optimal(dsc), 4),
        "aurc_random": round(float(np.mean([1.0 - d for d in dsc])), 4),
    }


def flag_counts(rows: list[dict], threshold: float, signal: str = "agreement") -> dict:
    """How a default flag (``signal`` below ``threshold``) splits poor and good pairs."""
    poor = [r for r in rows if r["dsc"] < POOR_DSC]
    good = [r for r in rows if r["dsc"] >= POOR_DSC]
    return {
        "threshold": threshold,
        "poor_flagged": sum(r[signal] < threshold for r in poor),
        "poor": len(poor),
        "good_flagged": sum(r[signal] < threshold for r in good),
        "good": len(good),
    }


def _aurc_cell(s: dict) -> str:
    return f"{s['aurc']} ({s['aurc_optimal']} / {s['aurc_random']})"


def markdown(summary: dict) -> str:
    lines = [
        f"| pairs | signal | n (DSC < {POOR_DSC}) | Spearman ρ with DSC | AUROC for DSC < {POOR_DSC} "
        "| AURC (optimal / random) |",
        "|---|---|---|---|---|---|",
    ]
    for name, key, group in (
        ("TCT checkpoints", "agreement", "two_heads"),
        ("TCT checkpoints", "confidence", "two_heads"),
        ("all checkpoints", "confidence", "all"),
    ):
        s = summary[group].get(key)
        if s:
            lines.append(f"| {name} | {key} | {s['pairs']} ({s['poor_pairs']}) | {s['spearman']} | {s['auroc']} "
                         f"| {_aurc_cell(s)} |")
    ensembles = summary.get("ensembles") or {}
    if ensembles:
        lines += ["", "Per method, each signal on the predictions it vouches for (the ensemble's signals on the "
                  "ensemble's label maps, the single-model ones on each member's):", "",
                  "| method | signal | on the predictions of | pairs (DSC < 0.7) | Spearman ρ | AUROC "
                  "| AURC (optimal / random) |", "|---|---|---|---|---|---|---|"]
        for method, e in ensembles.items():
            k = len(e["members"])
            for signal, whose, s in (
                ("ensemble agreement", f"the ensemble of {k}", e["ensemble_agreement"]),
                ("ensemble confidence", f"the ensemble of {k}", e["ensemble_confidence"]),
                ("single-model confidence", f"each of the {k} members", e["member_confidence"]),
                ("two-head agreement", f"each of the {k} members", e.get("member_agreement")),
            ):
                if s:
                    lines.append(f"| {method} | {signal} | {whose} | {s['pairs']} ({s['poor_pairs']}) "
                                 f"| {s['spearman']} | {s['auroc']} | {_aurc_cell(s)} |")
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
    for method, e in ensembles.items():
        f = e["flag"]
        lines.append("")
        lines.append(
            f"{method}: ensemble agreement flag at {f['threshold']}: {f['poor_flagged']} of {f['poor']} poor pairs "
            f"flagged, {f['good_flagged']} of {f['good']} good pairs flagged."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--no-ensembles", action="store_true",
                        help="score each checkpoint alone only (no ensemble of a method's checkpoints)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    classes, cases = held_out_cases(args.config)
    ground_truth = {c.case_id: np.asarray(c.load()[1]) for c in cases}
    rows: list[dict] = []
    two_heads: list[dict] = []
    seen: dict[tuple, Path] = {}
    duplicates: dict[str, str] = {}
    ensemble_rows: dict[str, list[dict]] = {}
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
        by_method: dict[str, list[Path]] = {}
        for checkpoint in seen.values():
            method = next(r["method"] for r in rows if r["checkpoint"] == str(checkpoint))
            by_method.setdefault(method, []).append(checkpoint)
        for method, members in by_method.items():
            if args.no_ensembles or len(members) < 2:
                continue
            scored = score_checkpoint(members, cases, ground_truth, Path(tmp) / f"ensemble_{method}")
            ensemble_rows[method] = scored
            print(f"{method} ensemble of {len(members)}: mean DSC {np.mean([r['dsc'] for r in scored]):.3f}", flush=True)
    ensembles = {}
    for method, scored in ensemble_rows.items():
        members = [r for r in rows if r["method"] == method]
        with_heads = [r for r in members if r["agreement"] is not None]
        ensembles[method] = {
            "members": scored[0]["members"],
            "mean_dsc": round(float(np.mean([r["dsc"] for r in scored])), 4),
            "member_mean_dsc": round(float(np.mean([r["dsc"] for r in members])), 4),
            "ensemble_agreement": summarise(scored, "ensemble_agreement"),
            "ensemble_confidence": summarise(scored, "confidence"),
            "member_confidence": summarise(members, "confidence"),
            "member_agreement": summarise(with_heads, "agreement") if len(with_heads) == len(members) else None,
            "flag": flag_counts(scored, ENSEMBLE_QC_THRESHOLD, "ensemble_agreement"),
        }
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
        "ensembles": ensembles,
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    pairs = rows + [r for scored in ensemble_rows.values() for r in scored]
    (args.output / "qc_validation.json").write_text(json.dumps({"summary": summary, "pairs": pairs}, indent=2) + "\n")
    (args.output / "qc_validation.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
