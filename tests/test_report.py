"""The report: a self-contained HTML page and its markdown twin from a fake run directory."""

from __future__ import annotations

import json
import math
import re

import nibabel as nib
import numpy as np
import pytest

from tctseg.cli import main
from tctseg.errors import DataError, TctsegWarning
from tctseg.evaluation.evaluate import evaluate_folders, write_json
from tctseg.files.run_records import read_log, read_log_columns
from tctseg.report import build_report, class_overlays, load_index

CLASSES = ["liver", "spleen", "kidney"]
AFFINE = np.diag([1.0, 1.0, 3.0, 1.0])
SHAPE = (40, 32, 6)
LABEL_MAP = {1: "liver", 2: "spleen", 3: "kidney"}


def _save(path, array, dtype=np.uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=dtype), AFFINE), str(path))
    return path


def _case(tmp_path, case_id, liver_slices, shift):
    """Image, GT (dataset ids = global ids here) and a prediction shifted by ``shift`` voxels."""
    x, y = np.mgrid[: SHAPE[0], : SHAPE[1]]
    body = ((x - 20) / 18) ** 2 + ((y - 16) / 14) ** 2 < 1
    image = np.repeat(body[..., None] * 100.0, SHAPE[2], axis=2)
    gt = np.zeros(SHAPE, np.uint8)
    for z, half in liver_slices.items():  # liver: a square whose size varies per slice
        gt[8 : 8 + 2 * half, 8 : 8 + 2 * half, z] = 1
    gt[26:32, 10:16, 2:4] = 2  # spleen
    gt[24:28, 20:24, 3] = 3  # kidney
    image[gt > 0] = 200.0
    pred = np.roll(gt, shift, axis=0)
    _save(tmp_path / "data" / "images" / f"{case_id}_0000.nii.gz", image, np.float32)
    _save(tmp_path / "data" / "labels" / f"{case_id}.nii.gz", gt)
    return pred


def _fake_run(tmp_path):
    """runs/demo/{tct,tal}: config, log.csv, predictions (+ index.json), metrics.json; results.json."""
    root = tmp_path / "runs" / "demo"
    preds = {
        "case_a": _case(tmp_path, "case_a", {1: 3, 2: 4}, shift=1),
        "case_b": _case(tmp_path, "case_b", {4: 6}, shift=1),  # largest liver area: case_b, slice 4
    }
    results = {}
    for method, extra_shift in (("tct", 0), ("tal", 2)):
        run = root / method
        (run).mkdir(parents=True)
        (run / "config.yaml").write_text(f"classes: {CLASSES}\nmethod: {{name: {method}}}\n")
        (run / "log.csv").write_text(
            "epoch,loss_total,loss_main,loss_aux,val_dice_liver,val_dice_spleen\n"
            "0,1.2,0.8,0.4,,\n1,0.9,0.6,0.3,0.5,0.4\n2,0.7,0.5,0.2,,\n3,0.6,0.4,0.2,0.7,0.6\n"
        )
        index = []
        for case_id, pred in preds.items():
            path = _save(run / "predictions" / "phantom" / f"{case_id}.nii.gz", np.roll(pred, extra_shift, axis=1))
            index.append({
                "case_id": case_id, "dataset": "phantom",
                "image": str(tmp_path / "data" / "images" / f"{case_id}_0000.nii.gz"),
                "label": str(tmp_path / "data" / "labels" / f"{case_id}.nii.gz"),
                "prediction": str(path.relative_to(run / "predictions")),
                "label_map": {str(k): v for k, v in LABEL_MAP.items()},
            })
        (run / "predictions" / "index.json").write_text(json.dumps(index))
        result = evaluate_folders(run / "predictions" / "phantom", tmp_path / "data" / "labels", CLASSES,
                                  LABEL_MAP, dataset_name="phantom", progress=False)
        (run / "metrics").mkdir()
        write_json(result, run / "metrics" / "metrics.json")
        results[method] = {"per_class": result.per_class(), "mean_dsc": result.mean()["dsc"],
                           "mean_hd95": result.mean()["hd95"], "wall_time_s": 123.4}
    (root / "results.json").write_text(json.dumps(results))
    return root


def test_report_is_self_contained_and_complete(tmp_path, capsys):
    root = _fake_run(tmp_path)
    assert main(["report", str(root)]) == 0
    html_path = root / "report.html"
    assert capsys.readouterr().out.strip() == str(html_path)
    html = html_path.read_text()
    assert 'src="http' not in html and "href=" not in html and "<link" not in html and "<script" not in html
    # 2 curves + 2 methods x 3 organ overlays, all embedded
    assert html.count('<img src="data:image/png;base64,') == 8
    for name in CLASSES + ["tct", "tal", "Comparison of methods", "Summary (results.json)", "2 min 03 s"]:
        assert name in html
    assert "method: {name: tal}" in html  # the config, verbatim
    assert re.search(r"<td>liver</td>.*<td>liver</td>", html, re.S)  # per-method and comparison tables

    markdown = (root / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\((report_files/[^)]+\.png)\)", markdown)
    assert len(linked) == 8
    for rel in linked:
        assert (root / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| mean |" in markdown


def test_overlay_picks_largest_ground_truth_slice(tmp_path):
    root = _fake_run(tmp_path)
    overlays = class_overlays(load_index(root / "tct" / "predictions" / "index.json"), CLASSES)
    picked = {o.class_name: (o.case_id, o.slice_index, o.gt_area) for o in overlays}
    assert picked["liver"] == ("case_b", 4, 12 * 12)
    assert picked["spleen"] == ("case_a", 2, 36)  # tie between cases/slices: the first wins
    assert picked["kidney"] == ("case_a", 3, 16)
    # the prediction is the GT shifted by one voxel along X: a 6x6 square overlaps 5x6
    spleen = next(o for o in overlays if o.class_name == "spleen")
    assert spleen.dsc_on_slice == 2 * 30 / 72


def test_overlays_are_drawn_in_the_recorded_modality_window(tmp_path):
    root = _fake_run(tmp_path)
    index_path = root / "tct" / "predictions" / "index.json"
    image = tmp_path / "data" / "images" / "case_b_0000.nii.gz"  # the liver's slice: HU-like air around the body
    _save(image, np.asarray(nib.load(str(image)).dataobj) - 1000.0, np.float32)
    index = json.loads(index_path.read_text())
    drawn = {}
    for modality in ("CT", "MR", None):
        for entry in index:
            entry.pop("modality", None)
            if modality is not None:
                entry["modality"] = modality
        index_path.write_text(json.dumps(index))
        drawn[modality] = {o.class_name: o.png for o in class_overlays(load_index(index_path), CLASSES)}
    assert drawn["CT"]["liver"] != drawn["MR"]["liver"]  # the values look like CT; the record decides
    assert drawn[None] == drawn["MR"]  # not recorded and no default: the percentile window
    by_run = class_overlays(load_index(index_path), CLASSES, default_modality="CT")
    assert {o.class_name: o.png for o in by_run} == drawn["CT"]  # an older index: the run's modality
    index[0]["modality"] = "PET"
    index_path.write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"entry 0 is malformed \(ValueError: modality 'PET' is not CT or MR\)"):
        load_index(index_path)


def test_one_reader_of_the_training_log(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss_total,val_dice_liver,lr\n0,1.5,,0.01\n1,1.25,0.5,x\n")
    columns = read_log_columns(log)  # the report's curves: header order, NaN where nothing is logged
    assert list(columns) == ["epoch", "loss_total", "val_dice_liver", "lr"]
    assert columns["loss_total"] == [1.5, 1.25] and math.isnan(columns["val_dice_liver"][0]) and math.isnan(columns["lr"][1])
    # the trainer's resume and the efficiency table: rows without those cells
    assert read_log(log) == [{"epoch": 0.0, "loss_total": 1.5, "lr": 0.01}, {"epoch": 1.0, "loss_total": 1.25, "val_dice_liver": 0.5}]
    assert read_log(tmp_path / "none.csv") == []


def test_single_method_run_without_predictions(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("classes: [liver]\n")
    (run / "log.csv").write_text("epoch,loss_total\n0,1.0\n1,0.5\n")
    html = build_report(run).read_text()
    assert "No predictions/index.json" in html and "No metrics/metrics.json" in html
    assert html.count("data:image/png;base64,") == 1


def test_unreadable_case_is_reported_not_fatal(tmp_path):
    root = _fake_run(tmp_path)
    index_path = root / "tct" / "predictions" / "index.json"
    index = json.loads(index_path.read_text())
    index[1]["prediction"] = "phantom/missing.nii.gz"  # case_b: the liver's best slice
    index_path.write_text(json.dumps(index))
    problems: list[str] = []
    overlays = class_overlays(load_index(index_path), CLASSES, problems)
    assert [o.class_name for o in overlays] == ["spleen", "kidney"]
    assert len(problems) == 1 and "missing.nii.gz" in problems[0]
    html = build_report(root / "tct").read_text()
    assert "Case skipped:" in html and "missing.nii.gz" in html


def test_tct_curves_show_the_consistency_filter_and_the_auxiliary_heads(tmp_path):
    import struct

    from tctseg.report.curves import training_curves_png

    def width(png: bytes) -> int:
        return struct.unpack(">I", png[16:20])[0]  # IHDR width

    tal, tct = tmp_path / "tal.csv", tmp_path / "tct.csv"
    tal.write_text("epoch,loss_total,val_dice_liver\n1,0.9,0.5\n2,0.7,0.6\n")
    tct.write_text(
        "epoch,loss_total,filter_absent,filter_kept_present,filter_iou_present,filter_kept_liver,"
        "filter_term_liver,val_dice_liver,val_ath_dice_liver\n"
        "1,0.9,0.6,0.5,0.3,0.5,0.01,0.5,0.4\n2,0.7,0.4,,0.6,,0.02,0.6,0.7\n"
    )
    # one 550-pixel panel per group: losses and validation DSC; TCT adds the filter's panel
    assert width(training_curves_png(tal)) == 2 * 550
    assert width(training_curves_png(tct)) == 3 * 550


def test_summary_says_which_methods_are_scored_per_task(tmp_path, capsys):
    root = _fake_run(tmp_path)
    assert main(["report", str(root)]) == 0
    assert "scored as their authors do" not in (root / "report.md").read_text()
    results = json.loads((root / "results.json").read_text())
    results["tal"]["scoring"] = "per_task"  # as run_method records a task-prompted method
    results["tct"]["scoring"] = "label_map"
    (root / "results.json").write_text(json.dumps(results))
    assert main(["report", str(root)]) == 0
    assert "tal: task-prompted, scored as their authors do: each class on its own mask σ > ½" in (
        root / "report.md").read_text()


# --------------------------------------------------------------------------- damaged files (issue 31, item 11)

DAMAGED = [
    # (file in the run, its bytes, the one line that names it)
    ("tct/metrics/metrics.json", b"[1]",
     "metrics/metrics.json: not a metrics table: a list, expected an object (classes, per_class, ...)"),
    ("tct/metrics/metrics.json", b'{"per_class": {"liver": 0.9}}',
     "metrics/metrics.json: 'per_class.liver' is a number (0.9), expected an object (dsc, hd95, cases)"),
    ("tct/metrics/metrics.json", b'{"classes": 5}', "metrics/metrics.json: 'classes' is a number (5), expected a list"),
    ("tct/metrics/metrics.json", b'{"convention": 3}', "metrics/metrics.json: 'convention' is a number (3)"),
    ("tct/metrics/metrics.json", b'{"per_class"', "metrics/metrics.json: not valid JSON (Expecting ':' delimiter at line 1"),
    ("tct/metrics/metrics.json", b"[" * 100000, "metrics/metrics.json: not usable JSON (nested too deeply)"),
    ("tct/metrics/metrics.json", "{\"classes\": [\"hígado\"]}".encode("latin-1"),
     "metrics/metrics.json: not UTF-8 text (byte 0xed at offset 15; save it as UTF-8)"),
    ("tct/config.yaml", "classes: [liver]\n# Übersicht\n".encode("latin-1"),
     "tct/config.yaml: not UTF-8 text (byte 0xdc at offset 19; save it as UTF-8)"),
    ("tct/config.yaml", b"classes: 5\n", "tct/config.yaml: 'classes' is a number (5), expected a list of class names"),
    ("tct/config.yaml", b"classes: [liver\n", "tct/config.yaml: not valid YAML"),
    ("results.json", b'{"tct": [1]}', "results.json: 'tct' is a list, expected an object (per_class, mean_dsc, ...)"),
    ("results.json", b'{"tct": {"per_class": 7}}', "results.json: 'tct.per_class' is a number (7), expected an object"),
    ("results.json", b"null", "results.json: not a results table: null, expected an object of methods"),
    ("tct/predictions/index.json", "[\"é\"]".encode("latin-1"),
     "predictions/index.json: cannot read prediction index (not UTF-8 text: byte 0xe9 at offset 2)"),
    ("tct/log.csv", "epoch,loss_total\n1,0.5 é\n".encode("latin-1"), "tct/log.csv: not UTF-8 text"),
]


@pytest.mark.parametrize("relative, content, expected", DAMAGED, ids=[f"{r}:{c[:12]!r}" for r, c, _ in DAMAGED])
def test_a_damaged_run_file_is_one_warning_line_naming_it_and_the_report_is_still_written(tmp_path, capsys, relative,
                                                                                          content, expected):
    """metrics.json holding [1] was an AttributeError, a Latin-1 config.yaml a UnicodeDecodeError."""
    root = _fake_run(tmp_path)
    if relative.endswith("log.csv"):
        (root / "tct" / "progress.png").unlink(missing_ok=True)  # the curves come from log.csv
    (root / relative).write_bytes(content)
    assert main(["report", str(root)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    warned = captured.err.strip().splitlines()
    assert len(warned) == 1, captured.err
    assert warned[0].startswith(f"tctseg report: warning: {root}/") and expected in warned[0], warned[0]
    assert warned[0].endswith(("; left out of the report", "; no overlays", "; its class list is not used"))
    html = (root / "report.html").read_text()
    assert "Method: tct" in html and "Method: tal" in html  # the rest of the run is reported
    assert expected.replace("'", "&#x27;").split(" (")[0] in html  # and the page says what was left out


def test_a_damaged_file_in_build_report_is_a_warning_not_an_error(tmp_path):
    root = _fake_run(tmp_path)
    (root / "tal" / "metrics" / "metrics.json").write_text('{"per_dataset": {"phantom": []}}')
    with pytest.warns(TctsegWarning, match=r"tal/metrics/metrics.json: 'per_dataset.phantom' is a list, expected an object"):
        html = build_report(root).read_text()
    assert "Comparison of methods" not in html  # one method's metrics left: nothing to compare
