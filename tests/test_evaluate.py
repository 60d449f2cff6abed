"""Folder evaluation: file matching, label mapping, annotated classes, writers and the CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tctseg.cli import main
from tctseg.errors import DataError, LabelError, OutputError
from tctseg.evaluation.evaluate import (
    evaluate_case,
    evaluate_folders,
    result_markdown,
    write_csv,
    write_json,
    write_markdown,
)

CLASSES = ["liver", "spleen", "kidney"]
AFFINE = np.diag([1.0, 1.0, 3.0, 1.0])  # 1 x 1 x 3 mm voxels
SHAPE = (8, 8, 6)


def _save(path, array, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.uint8), affine), str(path))
    return path


def _volumes():
    """GT in the dataset's ids (1 = spleen, 2 = liver); prediction in global ids.

    liver: GT 2x2x2 box, prediction shifted one slice (3 mm) along Z → DSC 4/8, HD95 3.
    spleen: GT 2x2x1, prediction identical → DSC 1, HD95 0.
    """
    gt = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    gt[1:3, 1:3, 1:3] = 2  # liver in dataset ids
    pred[1:3, 1:3, 2:4] = 1  # liver in global ids
    gt[5:7, 5:7, 4] = 1  # spleen in dataset ids
    pred[5:7, 5:7, 4] = 2  # spleen in global ids
    return gt, pred


def test_evaluate_case_hand_values():
    gt_dataset_ids, pred = _volumes()
    gt_global = np.zeros_like(gt_dataset_ids)
    gt_global[gt_dataset_ids == 2] = 1
    gt_global[gt_dataset_ids == 1] = 2
    scores = evaluate_case(pred, gt_global, (1.0, 1.0, 3.0), [1, 2, 3])
    assert scores[1]["dsc"] == pytest.approx(2 * 4 / 16)
    assert scores[1]["hd95"] == pytest.approx(3.0)
    assert scores[2]["dsc"] == 1.0 and scores[2]["hd95"] == 0.0
    # kidney absent from both: the "both empty" convention
    assert scores[3] == {"dsc": 1.0, "hd95": 0.0, "gt_voxels": 0, "pred_voxels": 0}


def test_folders_with_label_map_and_nnunet_suffix(tmp_path):
    gt, pred = _volumes()
    _save(tmp_path / "gt" / "case_a.nii.gz", gt)
    _save(tmp_path / "pred" / "case_a_0000.nii.gz", pred)  # named after the nnU-Net image
    empty_pred = np.zeros(SHAPE, np.uint8)
    _save(tmp_path / "gt" / "case_b.nii", gt)
    _save(tmp_path / "pred" / "case_b.nii.gz", empty_pred)
    result = evaluate_folders(
        tmp_path / "pred", tmp_path / "gt", CLASSES, label_map={1: "spleen", 2: "liver"}, dataset_name="ds", progress=False
    )
    # kidney is not reached by the label map, so it is not annotated and not scored
    assert sorted({r.class_name for r in result.rows}) == ["liver", "spleen"]
    assert len(result.rows) == 4
    diagonal = math.sqrt(8**2 + 8**2 + 18**2)
    per_class = result.per_class()
    assert per_class["liver"]["dsc"] == pytest.approx((0.5 + 0.0) / 2)
    assert per_class["liver"]["hd95"] == pytest.approx((3.0 + diagonal) / 2)
    assert per_class["spleen"]["dsc"] == pytest.approx(0.5)
    assert per_class["spleen"]["hd95"] == pytest.approx(diagonal / 2)
    mean = result.mean()
    assert mean["dsc"] == pytest.approx((0.25 + 0.5) / 2)
    assert mean["hd95"] == pytest.approx(((3.0 + diagonal) / 2 + diagonal / 2) / 2)

    data = json.loads(write_json(result, tmp_path / "m.json").read_text())
    assert data["per_class"]["liver"]["cases"] == 2
    assert data["per_dataset"]["ds"]["mean_dsc"] == pytest.approx(0.375)
    assert {c["case_id"] for c in data["cases"]} == {"case_a", "case_b"}
    rows = list(csv.DictReader(write_csv(result, tmp_path / "m.csv").open()))
    assert len(rows) == 4 and float(rows[0]["dsc"]) == pytest.approx(0.5)
    table = result_markdown(result)
    assert "| liver | 25.00 |" in table and "| kidney | – | – | 0 |" in table and "**mean** | **37.50**" in table


def test_metrics_files_are_written_atomically(tmp_path):
    gt, pred = _volumes()
    _save(tmp_path / "gt" / "c.nii.gz", gt)
    _save(tmp_path / "pred" / "c.nii.gz", pred)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", CLASSES, {1: "spleen", 2: "liver"}, progress=False)
    folder = tmp_path / "metrics"
    folder.mkdir()
    for write, name in ((write_json, "metrics.json"), (write_csv, "metrics.csv"), (write_markdown, "metrics.md")):
        assert write(result, folder / name) == folder / name
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.csv", "metrics.json", "metrics.md"]  # no temporary left
    # one handling of a failed write: an OutputError naming the file, nothing left behind
    with pytest.raises(OutputError, match=r"gone.metrics\.json: cannot write metrics \("):
        write_json(result, tmp_path / "gone" / "metrics.json")
    assert not (tmp_path / "gone").exists()


def test_annotated_restricts_classes(tmp_path):
    gt, pred = _volumes()
    _save(tmp_path / "gt" / "c.nii.gz", gt)
    _save(tmp_path / "pred" / "c.nii.gz", pred)
    result = evaluate_folders(
        tmp_path / "pred", tmp_path / "gt", CLASSES, {1: "spleen", 2: "liver"}, annotated=["spleen"], progress=False
    )
    assert [(r.class_name, r.dsc) for r in result.rows] == [("spleen", 1.0)]


def test_missing_prediction_names_the_case(tmp_path):
    gt, pred = _volumes()
    _save(tmp_path / "gt" / "c1.nii.gz", gt)
    _save(tmp_path / "gt" / "c2.nii.gz", gt)
    _save(tmp_path / "pred" / "c1.nii.gz", pred)
    with pytest.raises(DataError, match="c2"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", CLASSES, {1: "spleen", 2: "liver"}, progress=False)


def test_shape_mismatch_names_both_files(tmp_path):
    gt, _ = _volumes()
    _save(tmp_path / "gt" / "c.nii.gz", gt)
    _save(tmp_path / "pred" / "c.nii.gz", np.zeros((8, 8, 5)))
    with pytest.raises(DataError, match=r"pred/c\.nii\.gz.*gt/c\.nii\.gz"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", CLASSES, {1: "spleen", 2: "liver"}, progress=False)


def test_unmapped_label_is_an_error(tmp_path):
    gt, pred = _volumes()
    gt[0, 0, 0] = 7
    _save(tmp_path / "gt" / "c.nii.gz", gt)
    _save(tmp_path / "pred" / "c.nii.gz", pred)
    with pytest.raises(LabelError, match=r"c\.nii\.gz: holds label 7"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", CLASSES, {1: "spleen", 2: "liver"}, progress=False)


def test_cli_writes_tables_next_to_predictions(tmp_path, capsys):
    gt, pred = _volumes()
    _save(tmp_path / "gt" / "c.nii.gz", gt)
    _save(tmp_path / "run" / "predictions" / "ds" / "c.nii.gz", pred)
    code = main(
        ["evaluate", str(tmp_path / "run" / "predictions" / "ds"), str(tmp_path / "gt"),
         "--classes", "liver,spleen,kidney", "--label-map", "1:spleen,2:liver", "--dataset", "ds", "--no-progress"]
    )
    assert code == 0
    out_dir = tmp_path / "run" / "metrics"
    assert sorted(p.name for p in out_dir.iterdir()) == ["metrics.csv", "metrics.json", "metrics.md"]
    assert "| liver | 50.00 | 3.00 | 1 |" in capsys.readouterr().out
    assert json.loads((out_dir / "metrics.json").read_text())["dataset"] == "ds"


def _evaluate_with_config(tmp_path, capsys, config, dataset, case, gt, pred):
    """`tctseg evaluate --config CONFIG --dataset NAME` on one case; its ``per_class`` metrics."""
    _save(tmp_path / "gt" / f"{case}.nii.gz", gt)
    _save(tmp_path / "pred" / f"{case}.nii.gz", pred)
    code = main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--config", str(config),
                 "--dataset", dataset, "--out", str(tmp_path / "m"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    return json.loads((tmp_path / "m" / "metrics.json").read_text())["per_class"]


def test_cli_config_uses_btcvs_own_label_ids(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("classes: [liver, spleen]\ndatasets:\n  - {name: btcv, format: btcv, path: x, role: test}\n")
    gt = np.zeros((4, 4, 4), np.uint8)
    gt[:2, :2, :2] = 6  # BTCV liver
    gt[2:, 2:, 2:] = 1  # BTCV spleen
    gt[0, 3, 3] = 8  # BTCV aorta: not a configured class, so background
    pred = np.zeros((4, 4, 4), np.uint8)
    pred[:2, :2, :2] = 1  # global liver
    pred[2:, 2:, 2:] = 2  # global spleen
    per_class = _evaluate_with_config(tmp_path, capsys, config, "btcv", "img0001", gt, pred)
    assert per_class["liver"]["dsc"] == 1.0 and per_class["spleen"]["dsc"] == 1.0


def test_cli_config_uses_the_dataset_json_ids_of_chaos(tmp_path, capsys):
    """Found scoring the CHAOS validation subjects: `--config` with a chaos_nifti dataset took
    the ground truth as global ids, so spleen (CHAOS id 4) and right kidney (2) scored 0 with
    no error. The ids come from the dataset's dataset.json, as its converter reads them."""
    data = tmp_path / "chaos"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "file_ending": ".nii.gz",
        "labels": {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4},
    }))
    config = tmp_path / "c.yaml"
    config.write_text(f"classes: [liver, spleen, left_kidney, right_kidney]\ndatasets:\n"
                      f"  - {{name: val, format: chaos_nifti, path: {data}, role: validation}}\n")
    gt = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros((4, 4, 4), np.uint8)
    for x, chaos_id, global_id in ((0, 1, 1), (1, 4, 2), (2, 3, 3), (3, 2, 4)):
        gt[x, :2] = chaos_id
        pred[x, :2] = global_id
    per_class = _evaluate_with_config(tmp_path, capsys, config, "val", "chaos_31", gt, pred)
    assert {name: c["dsc"] for name, c in per_class.items()} == {
        "liver": 1.0, "spleen": 1.0, "left_kidney": 1.0, "right_kidney": 1.0}

    (data / "dataset.json").unlink()  # without it the ids are unknown: an error, not a guess
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--config", str(config),
                 "--dataset", "val", "--out", str(tmp_path / "m"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset.json: not found" in err[0] and "--label-map" in err[0], err


def test_cli_config_merges_kits19_tumour_into_the_kidney(tmp_path, capsys):
    """KiTS19's own ids (1 kidney, 2 tumour) need no folder; the tumour scores as kidney, as
    the converter trains it (SPEC "Preprocessing")."""
    config = tmp_path / "c.yaml"
    config.write_text("classes: [liver, kidney]\ndatasets:\n  - {name: kits, format: kits19, path: absent, role: test}\n")
    gt = np.zeros((4, 4, 4), np.uint8)
    gt[:2] = 1
    gt[0, 0] = 2  # tumour inside the kidney
    pred = np.zeros((4, 4, 4), np.uint8)
    pred[:2] = 2  # global kidney
    per_class = _evaluate_with_config(tmp_path, capsys, config, "kits", "case_00000", gt, pred)
    assert per_class["kidney"]["dsc"] == 1.0 and "liver" not in per_class


def test_cli_refuses_output_inside_ground_truth(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    code = main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--classes", "liver", "--out", str(tmp_path / "gt" / "m")])
    assert code == 2
    assert "ground-truth folder" in capsys.readouterr().err


def test_task_masks_score_each_class_on_its_own_mask(tmp_path):
    """Task-prompted methods: two classes' masks may overlap, and each is scored alone.

    GT (global ids): liver in x 0–1, spleen in x 2–3 (each 2·8·6 = 96 voxels). The liver task
    also claims the spleen (x 0–3), the spleen task is right (x 2–3). Per task: liver
    2·96/(192 + 96) = 2/3, spleen 1. An argmax label map of the same maps, with the liver more
    probable where both claim a voxel, gives liver x 0–3 (still 2/3) and NO spleen (DSC 0).
    """
    gt = np.zeros(SHAPE, np.uint8)
    gt[0:2] = 1
    gt[2:4] = 2
    masks = np.zeros(SHAPE + (3,), np.uint8)
    masks[0:4, ..., 0] = 1  # liver task: its organ and the spleen
    masks[2:4, ..., 1] = 1  # spleen task
    argmax_labels = np.zeros(SHAPE, np.uint8)
    argmax_labels[0:4] = 1
    per_task = evaluate_case(masks, gt, (1.0, 1.0, 3.0), [1, 2, 3])
    merged = evaluate_case(argmax_labels, gt, (1.0, 1.0, 3.0), [1, 2, 3])
    assert per_task[1]["dsc"] == pytest.approx(2 / 3) and merged[1]["dsc"] == pytest.approx(2 / 3)
    assert per_task[2]["dsc"] == 1.0 and per_task[2]["hd95"] == 0.0 and per_task[2]["pred_voxels"] == 96
    assert merged[2]["dsc"] == 0.0 and merged[2]["pred_voxels"] == 0
    assert per_task[3]["dsc"] == 1.0  # kidney: both empty
    # the same through files: a 4-D [X, Y, Z, N] prediction is read as task masks
    _save(tmp_path / "gt" / "c.nii.gz", gt)
    _save(tmp_path / "pred" / "c.nii.gz", masks)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", CLASSES, progress=False)
    assert {r.class_name: r.dsc for r in result.rows} == {"liver": pytest.approx(2 / 3), "spleen": 1.0, "kidney": 1.0}
    _save(tmp_path / "pred" / "c.nii.gz", masks[..., :2])
    with pytest.raises(LabelError, match=r"holds 2 task masks, but there are 3 classes"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", CLASSES, progress=False)


def test_ground_truth_mapping_and_the_converters_share_one_relabel():
    from tctseg.data.conversion.common import LabelMapping, apply_lut, relabel
    from tctseg.evaluation.evaluate import to_global_ids

    classes = ["liver", "spleen", "kidney"]
    labels = np.array([[[0, 3], [7, 9]], [[3, 3], [0, 9]]], dtype=np.int16)  # [2, 2, 2]
    # by hand: 3 → liver (1), 7 → ignore (0), 9 → kidney (3)
    expected = np.array([[[0, 1], [0, 3]], [[1, 1], [0, 3]]])
    mapped = to_global_ids(labels, classes, {3: "liver", 7: "ignore", 9: "kidney"}, "gt.nii.gz")
    assert mapped.dtype == np.uint16 and np.array_equal(mapped, expected)
    converted = apply_lut(labels, LabelMapping({0: 0, 3: 1, 7: 0, 9: 3}, ("liver", "kidney"), "dataset.json"), Path("ds/gt.nii.gz"))
    assert converted.dtype == np.uint8 and np.array_equal(converted, expected)
    # negative ids and bool maps, which a table indexed from 0 would get wrong
    assert relabel(np.array([-2, 0, 5]), {-2: 4, 0: 0, 5: 1}, np.uint16).tolist() == [4, 0, 1]
    assert relabel(np.array([True, False]), {0: 0, 1: 2}).tolist() == [2, 0]
    with pytest.raises(LabelError, match=r"gt.nii.gz: holds label 5, but the label map defines only \[0, 3, 7, 9\]"):
        to_global_ids(labels + 2 * (labels == 3), classes, {3: "liver", 7: "ignore", 9: "kidney"}, "gt.nii.gz")


@pytest.mark.parametrize("argv, message", [
    (["--classes", "liver,liver"], "--classes: 'liver' is given twice in 'liver,liver'; give each class once"),
    (["--classes", "liver,spleen", "--label-map", "1:liver,1:spleen"],
     "--label-map: id 1 is given twice (1:liver and 1:spleen); give each id once"),
    (["--classes", "liver,spleen", "--annotated", "spleen, spleen"], "--annotated: 'spleen' is given twice"),
], ids=["classes", "label-map", "annotated"])
def test_cli_refuses_a_class_or_label_id_given_twice(tmp_path, capsys, argv, message):
    """issue 31, item 14: `--classes liver,liver` scored id 1 twice and id 2 never; `--label-map
    1:liver,1:spleen` kept the last entry in silence."""
    gt, pred = _volumes()
    _save(tmp_path / "gt" / "c.nii.gz", gt)
    _save(tmp_path / "pred" / "c.nii.gz", pred)
    code = main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), *argv, "--out", str(tmp_path / "m"), "--no-progress"])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith(f"tctseg evaluate: error: {message}"), lines[0]
    assert not (tmp_path / "m").exists()


def _with_pixdim(path, pixdim):
    """Rewrite the stored pixdim[1:4] of an uncompressed .nii in place (sform untouched): a
    header whose pixdim disagrees with its affine, as some tools write them."""
    raw = bytearray(path.read_bytes())
    raw[80:92] = np.asarray(pixdim, dtype="<f4").tobytes()  # pixdim[0] at byte 76, [1:4] at 80
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("pixdim", [(1.0, 1.0, 6.0), (math.nan, math.nan, math.nan)], ids=["disagrees", "nan"])
def test_hd95_uses_the_affines_spacing_not_the_headers_pixdim(tmp_path, capsys, pixdim):
    """Issue 31, item 10: the 1 × 1 × 3 mm sform is what tctseg uses everywhere; evaluate read
    pixdim (6 mm → HD95 6 instead of 3; NaN → a scipy traceback)."""
    gt, pred = _volumes()
    _with_pixdim(_save(tmp_path / "gt" / "case_a.nii", gt), pixdim)
    _save(tmp_path / "pred" / "case_a.nii.gz", pred)
    header = nib.load(tmp_path / "gt" / "case_a.nii").header
    assert np.allclose(header.get_sform()[:3, :3], np.diag([1.0, 1.0, 3.0]), equal_nan=False)
    assert not np.allclose(header["pixdim"][1:4], [1.0, 1.0, 3.0])  # the header really disagrees
    code = main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--classes", ",".join(CLASSES),
                 "--label-map", "1:spleen,2:liver", "--out", str(tmp_path / "m"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    per_class = json.loads((tmp_path / "m" / "metrics.json").read_text())["per_class"]
    # by hand: the liver box is shifted one slice along z, 3 mm in the affine's grid (not 6, not NaN)
    assert per_class["liver"]["hd95"] == pytest.approx(3.0)
    assert per_class["liver"]["dsc"] == pytest.approx(0.5)
    assert per_class["spleen"]["hd95"] == 0.0


def test_a_ground_truth_without_a_usable_spacing_is_one_line(tmp_path, capsys):
    """No sform and no qform, NaN pixdim: nothing says how large a voxel is — one line naming the file."""
    gt, pred = _volumes()
    image = nib.Nifti1Image(gt, AFFINE)
    image.set_sform(None, code=0)
    image.set_qform(None, code=0)
    (tmp_path / "gt").mkdir()
    nib.save(image, tmp_path / "gt" / "case_a.nii")
    _with_pixdim(tmp_path / "gt" / "case_a.nii", (math.nan, 1.0, 3.0))
    _save(tmp_path / "pred" / "case_a.nii.gz", pred)
    code = main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--classes", ",".join(CLASSES),
                 "--out", str(tmp_path / "m"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tctseg evaluate: error: "), err
    assert "Traceback" not in err
