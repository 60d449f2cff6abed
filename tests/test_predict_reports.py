"""`tctseg predict --statistics / --preview / --qc / --output-format dicom-seg` on the real CT,
its DICOM series and stand-in models of known behaviour."""

from __future__ import annotations

import io
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tctseg.cli import main
from tctseg.config import config_from_dict
from tctseg.data.io import dicom_series_files, load_volume
from tctseg.inference import predict_cases
from tctseg.inference.organs import ORGANS
from tctseg.inference.preview import organ_centre, render_preview
from tctseg.inference.quality import organ_quality
from tctseg.inference.statistics import organ_statistics
from tctseg.methods import build_method
from tctseg.predict_options import ReportOptions

from test_predict import CT, DATA, DICOM, IntensityAndEdge, needs_data, save_checkpoint_of, tiny_config, write_lps_copy

TOTALSEG_LABELS = DATA / "organs_predicted.nii.gz"
CT_ORGANS = ["liver", "spleen", "left_kidney", "right_kidney", "pancreas"]  # data/README: label ids 1..5


class AgreeingAndDisagreeingHeads(IntensityAndEdge):
    """IntensityAndEdge with auxiliary heads of known behaviour: ATH 1 says exactly what the main
    head says about class 1 (logit z₁ − max(z₀, z₂)), ATH 2 marks class 1's region instead of
    class 2's, so it disagrees with the main head about class 2. Counts its ATH calls."""

    def __init__(self) -> None:
        super().__init__()
        self.network = nn.Module()
        self.network.aux_heads = nn.Identity()  # what quality.has_auxiliary_heads looks for
        self.aux_calls = 0

    def predict_with_aux(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.aux_calls += 1
        z = self.conv(image)
        class1 = z[:, 1] - torch.maximum(z[:, 0], z[:, 2])
        foreground = torch.stack([class1, class1], dim=1)  # ATH 2 copies ATH 1: wrong about class 2
        return z, torch.stack([-foreground, foreground], dim=2) / 2  # [B, N, 2, *S]: softmax gives σ(fg)


def organ_config(**method) -> object:
    return config_from_dict(
        {
            "classes": ["liver", "spleen"],
            "datasets": [{"name": "kits", "format": "kits19", "path": "unused"}],
            "network": {"width": 4, "depth": 3},
            "preprocessing": {"spacing": [8.0, 8.0, 8.0]},
            "train": {"patch_size": [32, 32, 16]},
            **({"method": method} if method else {}),
        }
    )


# --------------------------------------------------------------------------- statistics


@needs_data
def test_statistics_of_the_real_ct_count_voxels_and_agree_in_world_space_across_orientations(tmp_path):
    ct, labels = load_volume(CT), load_volume(TOTALSEG_LABELS, integer=True).array
    stats = organ_statistics(labels, ct.array, ct.affine, CT_ORGANS)
    liver = stats["liver"]
    mask = labels == 1
    assert liver["voxels"] == int(mask.sum()) > 10_000
    assert liver["volume_ml"] == pytest.approx(mask.sum() * 27 / 1000, abs=1e-3)  # 3 mm isotropic voxels
    assert liver["intensity_mean"] == pytest.approx(float(ct.array[mask].mean()), abs=1e-2)
    assert 20 < liver["intensity_mean"] < 200  # soft tissue in HU, so the HU values are really read
    expected = nib.affines.apply_affine(ct.affine, np.argwhere(mask).mean(0))
    np.testing.assert_allclose(liver["centroid_ras_mm"], expected, atol=0.01)
    # the liver lies on the patient's right: larger R coordinate than the spleen's
    assert liver["centroid_ras_mm"][0] > stats["spleen"]["centroid_ras_mm"][0]
    # the same scan stored LPS: the same organ in world millimetres, voxel boxes differ
    lps = load_volume(write_lps_copy(tmp_path / "ct_lps.nii.gz"))
    flipped = organ_statistics(labels[::-1, ::-1, :], lps.array, lps.affine, CT_ORGANS)
    for organ in CT_ORGANS:
        assert flipped[organ]["volume_ml"] == stats[organ]["volume_ml"]
        np.testing.assert_allclose(flipped[organ]["centroid_ras_mm"], stats[organ]["centroid_ras_mm"], atol=0.01)
        np.testing.assert_allclose(flipped[organ]["bbox_ras_mm"], stats[organ]["bbox_ras_mm"], atol=0.01)


def test_statistics_of_an_absent_organ_are_zero_and_null():
    labels = np.zeros((4, 4, 4), np.uint8)
    stats = organ_statistics(labels, np.zeros((4, 4, 4), np.float32), np.eye(4), ["liver"])
    assert stats["liver"] == {"voxels": 0, "volume_ml": 0.0, "intensity_mean": None, "intensity_sd": None,
                              "centroid_ras_mm": None, "bbox_voxels": None, "bbox_ras_mm": None}


# --------------------------------------------------------------------------- qc


def test_organ_quality_by_hand():
    labels = np.zeros((4, 4, 1), np.uint8)
    labels[:2, :2] = 1  # 4 voxels of class 1
    labels[2:, 2:] = 2  # 4 voxels of class 2
    probs = np.zeros((4, 4, 1, 3), np.uint8)
    probs[..., 1] = 204  # 0.8
    probs[..., 2] = 102  # 0.4
    aux = np.zeros((2, 4, 4, 1), bool)
    aux[0] = labels == 1  # ATH 1 agrees exactly
    aux[1, 2:, 2:] = True
    aux[1, 0, :] = True  # ATH 2: the 4 voxels of class 2 plus 4 more → DSC 2·4 / (4 + 8) = 2/3
    quality = organ_quality(labels, probs, ["liver", "spleen"], aux, threshold=0.8)
    assert quality["liver"] == {"voxels": 4, "confidence": 0.8, "aux_voxels": 4, "agreement": 1.0, "flagged": False}
    assert quality["spleen"]["agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert quality["spleen"]["confidence"] == pytest.approx(0.4)
    assert quality["spleen"]["flagged"]
    without_heads = organ_quality(labels, probs, ["liver", "spleen"], None)
    assert without_heads["spleen"]["agreement"] is None and not without_heads["spleen"]["flagged"]


@needs_data
def test_qc_on_the_real_ct_flags_the_disagreeing_organ_and_the_heads_run_only_when_asked(tmp_path):
    method = AgreeingAndDisagreeingHeads()
    plain = predict_cases((method, tiny_config()), [CT], tmp_path / "plain", progress=False)
    assert plain[0].status == "written" and method.aux_calls == 0  # the default costs a plain U-Net
    out = tmp_path / "qc"
    predict_cases((method, tiny_config()), [CT], out, progress=False, reports=ReportOptions(qc=True))
    assert method.aux_calls > 0
    quality = json.loads((out / "qc.json").read_text())
    assert quality["threshold"] == 0.8
    bright, edge = quality["cases"]["ct"]["bright"], quality["cases"]["ct"]["edge"]
    assert bright["voxels"] > 1000 and bright["agreement"] > 0.95 and not bright["flagged"]
    assert edge["voxels"] > 1000 and edge["agreement"] < 0.5 and edge["flagged"]
    assert 0.0 < bright["confidence"] <= 1.0
    # the label map is the same with or without the auxiliary heads
    np.testing.assert_array_equal(nib.load(str(out / "ct.nii.gz")).get_fdata(), nib.load(str(tmp_path / "plain" / "ct.nii.gz")).get_fdata())


@needs_data
def test_cli_qc_with_a_real_tct_network_prints_the_summary(tmp_path, capsys, one_thread):
    config = organ_config(name="tct")
    torch.manual_seed(0)
    checkpoint = save_checkpoint_of(build_method(config), config, tmp_path / "tct.pt")
    out = tmp_path / "out"
    status = main(["predict", str(checkpoint), str(CT), str(out), "--no-progress", "--qc", "--qc-threshold", "0.9"])
    printed = capsys.readouterr().out
    assert status == 0
    quality = json.loads((out / "qc.json").read_text())
    assert quality["threshold"] == 0.9
    for organ in ("liver", "spleen"):
        entry = quality["cases"]["ct"][organ]
        assert entry["agreement"] is not None  # TCT's ATHs ran
        assert entry["flagged"] == (entry["agreement"] < 0.9)
    assert "qc ct: liver agreement" in printed and "flagged (two-head agreement < 0.9)" in printed


# --------------------------------------------------------------------------- preview


def test_organ_centre_is_the_mean_organ_voxel():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:4, 6:8, 1:3] = 1
    assert organ_centre(labels) == (2, 6, 2)  # means 2.5, 6.5, 1.5, rounded half to even
    assert organ_centre(np.zeros((10, 8, 6), np.uint8)) == (5, 4, 3)


@needs_data
def test_preview_of_the_real_ct_shows_every_organ_in_its_colour(tmp_path):
    ct, labels = load_volume(CT), load_volume(TOTALSEG_LABELS, integer=True).array
    png = render_preview(ct.array, labels, ct.affine, CT_ORGANS, "CT", title="ct")
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert picture.shape[1] > 3 * picture.shape[0] / 2  # three planes side by side
    for organ in CT_ORGANS:  # the legend's opaque patches carry each organ's exact colour
        colour = np.asarray(ORGANS[organ].colour)
        assert (np.abs(picture - colour).sum(-1) <= 3).sum() > 20, organ
    grey = (picture[..., 0] == picture[..., 1]) & (picture[..., 1] == picture[..., 2])
    assert len(np.unique(picture[grey][:, 0])) > 100  # the scan itself, windowed, not a flat image


@needs_data
def test_preview_and_statistics_of_the_dicom_series(tmp_path):
    out = tmp_path / "out"
    predict_cases((IntensityAndEdge(), tiny_config()), [DICOM], out, progress=False,
                  reports=ReportOptions(statistics=True, preview=True))
    labels = np.asarray(nib.load(str(out / "dicom_series.nii.gz")).dataobj)
    stats = json.loads((out / "statistics.json").read_text())["dicom_series"]
    assert stats["bright"]["voxels"] == int((labels == 1).sum()) > 0
    csv_rows = (out / "statistics.csv").read_text().splitlines()
    assert csv_rows[0].startswith("case_id,organ,voxels,volume_ml") and len(csv_rows) == 3
    picture = Image.open(out / "dicom_series_preview.png")
    assert picture.size[0] > 500


# --------------------------------------------------------------------------- DICOM SEG


@needs_data
def test_dicom_seg_segments_reference_the_right_source_slices(tmp_path):
    hd = pytest.importorskip("highdicom")
    import pydicom

    out = tmp_path / "out"
    config = organ_config()  # classes liver, spleen: coded with their SNOMED concepts
    results = predict_cases((IntensityAndEdge(), config), [DICOM], out, progress=False,
                            reports=ReportOptions(output_format="dicom-seg"))
    assert results[0].status == "written"
    labels = np.asarray(nib.load(str(out / "dicom_series.nii.gz")).dataobj)  # [i, j, k]
    files = dicom_series_files(DICOM)
    slice_of = {pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID: k for k, f in enumerate(files)}
    seg = hd.seg.segread(out / "dicom_series_seg.dcm")
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    codes = {s.SegmentNumber: s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence}
    assert codes == {1: ORGANS["liver"].snomed[0], 2: ORGANS["spleen"].snomed[0]}
    frames = seg.pixel_array  # [frames, rows, columns]
    seen: dict[int, set[int]] = {1: set(), 2: set()}
    for index, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        segment = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = slice_of[source]
        seen[segment].add(k)
        np.testing.assert_array_equal(frames[index].astype(bool), labels[:, :, k].T == segment)
    for segment in (1, 2):  # every slice holding the organ has its frame, and no other slice
        expected = {k for k in range(labels.shape[2]) if (labels[:, :, k] == segment).any()}
        assert expected and seen[segment] == expected


def test_dicom_seg_for_a_nifti_input_is_refused_by_name(tmp_path, capsys):
    config = organ_config()
    torch.manual_seed(0)
    checkpoint = save_checkpoint_of(build_method(config), config, tmp_path / "m.pt")
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(scan))
    status = main(["predict", str(checkpoint), str(scan), str(tmp_path / "out"), "--output-format", "dicom-seg", "--no-progress"])
    assert status == 2
    err = capsys.readouterr().err
    assert "scan.nii.gz is not a DICOM series folder" in err


@needs_data
def test_cli_writes_all_four_reports_for_the_real_dicom_series_with_a_tct_checkpoint(tmp_path, capsys, one_thread):
    config = organ_config(name="tct")
    torch.manual_seed(0)
    checkpoint = save_checkpoint_of(build_method(config), config, tmp_path / "tct.pt")
    out = tmp_path / "out"
    argv = ["predict", str(checkpoint), str(DICOM), str(out), "--no-progress", "--statistics", "--preview", "--qc",
            "--output-format", "dicom-seg"]
    assert main(argv) == 0
    for name in ("dicom_series.nii.gz", "dicom_series_preview.png", "dicom_series_seg.dcm", "statistics.json",
                 "statistics.csv", "qc.json"):
        assert (out / name).is_file(), name
    assert "qc dicom_series:" in capsys.readouterr().out
    # a rerun finds every asked-for output and skips the case
    assert main(argv) == 0
    assert "0 written, 1 skipped" in capsys.readouterr().out
    (out / "dicom_series_preview.png").unlink()  # one report missing: only it is made, from the label map
    assert main(argv) == 0
    assert "0 written, 0 skipped (output existed), 1 completed" in capsys.readouterr().out
    assert (out / "dicom_series_preview.png").is_file()
    (out / "qc.json").unlink()  # QC needs the probabilities: the case is predicted again
    assert main(argv) == 0
    assert "1 written, 0 skipped" in capsys.readouterr().out


KILLED_DURING_STATISTICS_RUN = """
import os, sys
sys.path.insert(0, sys.argv[1])
from test_predict import IntensityAndEdge, tiny_config
import tctseg.inference.predict as predict
from tctseg.predict_options import ReportOptions
die_at = int(sys.argv[4])  # 1: right after the first label map; 2: before the second is written
save, calls = predict.save_nifti, []
def save_or_die(*args, **kwargs):
    calls.append(1)
    if len(calls) == die_at == 2:
        os._exit(9)  # SIGKILL-like: no clean-up, no final index or statistics
    save(*args, **kwargs)
    if len(calls) == die_at == 1:
        os._exit(9)
predict.save_nifti = save_or_die
predict.predict_cases((IntensityAndEdge(), tiny_config(spacing=[4.0, 4.0, 8.0])), [sys.argv[2]], sys.argv[3],
                      modality="CT", progress=False, reports=ReportOptions(statistics=True, preview=True))
"""


@pytest.mark.parametrize("die_at, statuses", [(2, ["skipped", "written"]), (1, ["completed", "written"])],
                         ids=["after-first-case", "before-its-statistics"])
def test_a_killed_statistics_run_is_not_redone(tmp_path, monkeypatch, one_thread, die_at, statuses):
    """issue 31 (smaller): with --statistics a killed predict predicted its finished cases again
    (statistics.json was written only at the end). Now it is written after each case; a case
    whose label map is there but whose statistics are not gets them from the label map, without
    predicting again; the statistics equal a clean run's."""
    import subprocess
    import sys
    from pathlib import Path

    import tctseg.inference.predict as predict_module
    from test_predict import write_volume

    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(2):
        write_volume(scans / f"s{i}.nii.gz", shape=(20, 18, 12), seed=i)
    model = (IntensityAndEdge(), tiny_config(spacing=[4.0, 4.0, 8.0]))
    clean = tmp_path / "clean"
    predict_cases(model, [scans], clean, modality="CT", progress=False, reports=ReportOptions(statistics=True, preview=True))
    out = tmp_path / "out"
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    killed = subprocess.run([sys.executable, "-c", KILLED_DURING_STATISTICS_RUN, str(Path(__file__).parent), str(scans),
                             str(out), str(die_at)], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr
    if die_at == 2:  # s0 finished: its statistics are on disk already
        assert list(json.loads((out / "statistics.json").read_text())) == ["s0"]
    predicted = []
    real = predict_module._predict_case
    monkeypatch.setattr(predict_module, "_predict_case", lambda run, case: predicted.append(case.case_id) or real(run, case))
    results = predict_cases(model, [scans], out, modality="CT", progress=False,
                            reports=ReportOptions(statistics=True, preview=True))
    assert [r.status for r in results] == statuses
    assert predicted == ["s1"]  # s0 was not predicted again
    assert json.loads((out / "statistics.json").read_text()) == json.loads((clean / "statistics.json").read_text())
    assert (out / "statistics.csv").read_text() == (clean / "statistics.csv").read_text()
    for name in ("s0.nii.gz", "s1.nii.gz", "s0_preview.png", "s1_preview.png"):
        assert (out / name).read_bytes() == (clean / name).read_bytes(), name
    assert [e["case_id"] for e in json.loads((out / "index.json").read_text())] == ["s0", "s1"]
