"""`tctseg predict A.pt B.pt ...`: an ensemble averages its members' probabilities, refuses
members that disagree, and with --qc reports the members' agreement (issue 27, items 1–2)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from tctseg.cli import main
from tctseg.data.io import load_volume
from tctseg.errors import CheckpointError
from tctseg.inference import predict_cases
from tctseg.inference.export import labels_in_original_space
from tctseg.inference.predict import prepare_image
from tctseg.inference.quality import ensemble_agreement, organ_quality, qc_summary
from tctseg.inference.sliding_window import sliding_window_probabilities, window_count
from tctseg.methods import build_method
from tctseg.methods.task_prompted import TaskPromptedMethod
from tctseg.predict_options import ENSEMBLE_QC_THRESHOLD, ReportOptions

from test_predict import IntensityAndEdge, save_checkpoint_of, tiny_config, write_volume
from test_predict_reports import AgreeingAndDisagreeingHeads

SPACING = [6.0, 5.0, 8.0]  # the scans are 4 × 4 × 8 mm: prepared on another grid, resampled back


@pytest.fixture
def scan(tmp_path) -> Path:
    (tmp_path / "scans").mkdir()
    return write_volume(tmp_path / "scans" / "a.nii.gz")


def labels_of(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


# --------------------------------------------------------------------------- stand-ins


class ConstantSoftmax(nn.Module):
    """The same softmax ``p`` at every voxel (logits log p)."""

    def __init__(self, p: list[float]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, len(p), 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.copy_(torch.log(torch.tensor(p)))

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image)


class ConstantSigmoids(TaskPromptedMethod):
    """Task-prompted stand-in: the same task probabilities σ_c at every voxel."""

    def __init__(self, sigmas: list[float]) -> None:
        super().__init__()
        self.num_classes = len(sigmas)
        self.network = nn.Conv3d(1, len(sigmas), 1)
        with torch.no_grad():
            self.network.weight.zero_()
            self.network.bias.copy_(torch.logit(torch.tensor(sigmas)))

    def task_logits(self, image: torch.Tensor, batch=None) -> torch.Tensor:
        return self.network(image)


class ShiftedIntensityAndEdge(AgreeingAndDisagreeingHeads):
    """IntensityAndEdge (with its auxiliary heads) with class 1 from a higher intensity on:
    overlaps the original's class 1."""

    def __init__(self, bias: float) -> None:
        super().__init__()
        with torch.no_grad():
            self.conv.bias[1] = bias


def checkpoint(tmp_path: Path, name: str, seed: int = 0, method: str = "tct", **preprocessing) -> Path:
    config = tiny_config(**{"spacing": SPACING, **preprocessing})
    config.method.name = method
    torch.manual_seed(seed)
    return save_checkpoint_of(build_method(config), config, tmp_path / f"{name}.pt")


# --------------------------------------------------------------------------- one member is today's predict


def test_one_member_is_exactly_the_single_model_prediction(tmp_path, scan, one_thread):
    model = (IntensityAndEdge(), tiny_config(spacing=SPACING))
    single = predict_cases(model, [scan], tmp_path / "single", progress=False, save_probabilities=True)
    listed = predict_cases([model], [scan], tmp_path / "listed", progress=False, save_probabilities=True)
    assert single[0].status == listed[0].status == "written"
    for name in ("a.nii.gz", "a_probabilities.nii.gz"):
        assert (tmp_path / "single" / name).read_bytes() == (tmp_path / "listed" / name).read_bytes()
    # and both are the pipeline's steps, as predict composed them before ensembles existed
    method, config = model
    volume = load_volume(scan)
    image, geometry = prepare_image(volume, "CT", config)
    probs = sliding_window_probabilities(method, image, config.train.patch_size, overlap=config.inference.overlap,
                                         channels_last=config.network.channels_last).numpy()
    expected, _, _ = labels_in_original_space(probs, geometry)
    labels = labels_of(tmp_path / "single" / "a.nii.gz")
    assert labels.tobytes() == expected.tobytes() and len(np.unique(labels)) == 3
    index = json.loads((tmp_path / "single" / "index.json").read_text())
    assert index[0]["models"] == [{"checkpoint": None, "sha256": None}]  # given in memory


def test_one_checkpoint_on_the_command_line_is_recorded_with_its_sha256(tmp_path, scan, capsys, one_thread):
    model = checkpoint(tmp_path, "tct")
    assert main(["predict", str(model), str(scan), str(tmp_path / "out"), "--no-progress"]) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index[0]["models"] == [{"checkpoint": str(model.resolve()), "sha256": hashlib.sha256(model.read_bytes()).hexdigest()}]


# --------------------------------------------------------------------------- averaging


def test_ensemble_averages_softmax_so_it_can_pick_a_class_no_member_picks(tmp_path, scan):
    config = tiny_config(spacing=SPACING)
    first, second = ConstantSoftmax([0.5, 0.45, 0.05]), ConstantSoftmax([0.05, 0.45, 0.5])
    predict_cases([(first, config), (second, config)], [scan], tmp_path / "out", progress=False, save_probabilities=True)
    # alone they say background (0.5) and class 2 (0.5); their mean (0.275, 0.45, 0.275) says class 1
    assert set(np.unique(labels_of(tmp_path / "out" / "a.nii.gz"))) == {1}
    probs = nib.load(str(tmp_path / "out" / "a_probabilities.nii.gz")).dataobj.get_unscaled()  # uint8 round(255 p)
    assert {tuple(v) for v in probs.reshape(-1, 3)} == {(70, 115, 70)}  # 255 · (0.275, 0.45, 0.275)
    alone = predict_cases((first, config), [scan], tmp_path / "alone", progress=False)
    assert set(np.unique(labels_of(tmp_path / "alone" / "a.nii.gz"))) == {0}


def test_ensemble_averages_task_sigmoids_not_labels(tmp_path, scan):
    config = tiny_config(spacing=SPACING)
    first, second = ConstantSigmoids([0.8, 0.1]), ConstantSigmoids([0.1, 0.6])
    predict_cases([(first, config), (second, config)], [scan], tmp_path / "out", progress=False,
                  save_probabilities=True, save_task_masks=True)
    # alone: task 1 (σ 0.8) and task 2 (σ 0.6); their mean σ (0.45, 0.35): no task above ½
    assert set(np.unique(labels_of(tmp_path / "out" / "a.nii.gz"))) == {0}
    assert not labels_of(tmp_path / "out" / "a_tasks.nii.gz").any()
    probs = nib.load(str(tmp_path / "out" / "a_probabilities.nii.gz")).dataobj.get_unscaled()
    assert {tuple(v) for v in probs.reshape(-1, 2)} == {(115, 89)}  # 255 · (0.45, 0.35) = 114.75, 89.25


def test_ensemble_probabilities_are_the_members_mean_in_the_scans_own_space(tmp_path, scan, one_thread):
    config = tiny_config(spacing=SPACING)
    members = [(ShiftedIntensityAndEdge(-11.0), config), (ShiftedIntensityAndEdge(-13.0), config)]
    outputs = []
    for k, member in enumerate(members):
        predict_cases(member, [scan], tmp_path / f"m{k}", progress=False, save_probabilities=True)
        outputs.append(nib.load(str(tmp_path / f"m{k}" / "a_probabilities.nii.gz")).get_fdata())
    predict_cases(members, [scan], tmp_path / "ens", progress=False, save_probabilities=True)
    ensemble = nib.load(str(tmp_path / "ens" / "a_probabilities.nii.gz")).get_fdata()
    mean = (outputs[0] + outputs[1]) / 2
    assert np.abs(ensemble - mean).max() <= 1.5 / 255  # each file rounds to 1/255
    assert np.abs(outputs[0] - outputs[1]).max() > 0.3  # the members really differ
    # the label map is the mean's argmax wherever the mean has a clear winner
    labels = labels_of(tmp_path / "ens" / "a.nii.gz")
    top2 = np.sort(mean, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 3 / 255
    assert clear.mean() > 0.9
    assert np.array_equal(labels[clear], mean.argmax(-1)[clear])


def test_one_progress_bar_counts_every_members_windows():
    counted: list[int] = []
    image = np.zeros((45, 30, 17), np.float32)
    for patch, overlap, batch in (([32, 32, 16], 0.5, 1), ([16, 16, 8], 0.25, 3), ([32, 32, 16], 0.0, 2), ([8, 8, 8], 0.75, 4)):
        counted.clear()
        sliding_window_probabilities(ConstantSoftmax([0.5, 0.5]), image, patch, overlap=overlap, sw_batch_size=batch,
                                     channels_last=False, on_windows=counted.append)
        assert sum(counted) == window_count(image.shape, patch, overlap) and max(counted) <= batch
    assert window_count((45, 30, 17), (32, 32, 16), 0.5) == 2 * 1 * 2  # X: starts 0, 13; Y padded to 32; Z: 0, 1


# --------------------------------------------------------------------------- members must agree


@pytest.mark.parametrize(
    "second, difference",
    [
        (dict(spacing=[4.0, 4.0, 8.0]), "preprocessing.spacing ([6.0, 5.0, 8.0] vs [4.0, 4.0, 8.0])"),
        (dict(method="tal"), "method ('tct' vs 'tal')"),
        (dict(ct_clip=[-200.0, 300.0]), "preprocessing.ct_clip"),
    ],
)
def test_members_that_disagree_are_refused_in_one_line_naming_both(tmp_path, scan, capsys, second, difference):
    first = checkpoint(tmp_path, "first")
    other = checkpoint(tmp_path, "second", seed=1, **second)
    out = tmp_path / "out"
    assert main(["predict", str(first), str(other), str(scan), str(out), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"{first} and {other} differ in {difference}" in error
    assert not out.exists()  # refused before the output folder is touched


def test_members_with_other_classes_or_output_kind_are_refused(tmp_path, scan):
    config = tiny_config(spacing=SPACING)
    other = tiny_config(spacing=SPACING)
    other.classes = ["bright", "dark"]
    with pytest.raises(CheckpointError, match=r"model 1 and model 2 differ in classes \(\['bright', 'edge'\] vs \['bright', 'dark'\]\)"):
        predict_cases([(IntensityAndEdge(), config), (IntensityAndEdge(), other)], [scan], tmp_path / "out", progress=False)
    # in memory, one config: the models themselves differ in what their probabilities are
    with pytest.raises(CheckpointError, match=r"model 1 and model 2 differ in output \('one softmax over the classes' vs "
                       r"'one sigmoid per class'\)"):
        predict_cases([(IntensityAndEdge(), config), (ConstantSigmoids([0.5, 0.5]), config)], [scan], tmp_path / "out")
    with pytest.raises(CheckpointError, match=r"differ in auxiliary heads \(False vs True\)"):
        predict_cases([(IntensityAndEdge(), config), (ShiftedIntensityAndEdge(-13.0), config)], [scan], tmp_path / "out")


def test_members_inference_settings_must_agree_unless_given(tmp_path, scan, capsys):
    config = tiny_config(spacing=SPACING)
    other = tiny_config(spacing=SPACING)
    other.inference.overlap = 0.25
    members = [(ShiftedIntensityAndEdge(-11.0), config), (ShiftedIntensityAndEdge(-13.0), other)]
    with pytest.raises(CheckpointError, match=r"model 1 and model 2 differ in inference.overlap \(0.5 vs 0.25\)"):
        predict_cases(members, [scan], tmp_path / "out", progress=False)
    assert predict_cases(members, [scan], tmp_path / "out", progress=False, overlap=0.25)[0].status == "written"


def test_the_same_checkpoint_twice_or_a_folder_is_refused(tmp_path, scan, capsys):
    model = checkpoint(tmp_path, "tct")
    copy = tmp_path / "copy.pt"
    copy.write_bytes(model.read_bytes())
    assert main(["predict", str(model), str(copy), str(scan), str(tmp_path / "out"), "--no-progress"]) == 2
    assert f"{copy}: is the same model as {model} (sha256 " in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(scan), str(tmp_path / "out"), "--no-progress"]) == 2
    assert f"{tmp_path}: is a folder; give its checkpoint file(s)" in capsys.readouterr().err


# --------------------------------------------------------------------------- ensemble agreement


def test_ensemble_agreement_by_hand():
    a = np.zeros((4, 4, 1), np.uint8)
    a[:2, :2] = 1  # class 1: 4 voxels
    a[3, 3] = 3  # class 3: only member a
    b = np.where(a == 1, 1, 0).astype(np.uint8)  # class 1 as a's
    c = np.zeros_like(a)
    c[:2, 0] = 1
    c[2:, 0] = 1  # class 1: 2 of a's voxels and 2 others → DSC with a (and b) 2·2 / (4 + 4) = 0.5
    agreement = ensemble_agreement([a, b, c], num_classes=3)
    assert agreement[0] == pytest.approx((1.0 + 0.5 + 0.5) / 3)
    assert agreement[1] == 1.0  # no member finds class 2
    assert agreement[2] == pytest.approx((0.0 + 0.0 + 1.0) / 3)  # a alone: pairs (a,b), (a,c) 0; (b,c) both empty 1
    # beside the ensemble's confidence and two-head agreement; flagged below the fixed 0.8
    assert ENSEMBLE_QC_THRESHOLD == 0.8
    probs = np.full((4, 4, 1, 4), 200, np.uint8)
    aux = np.stack([a == 1, a == 2, a == 3])
    quality = organ_quality(a, probs, ["liver", "spleen", "pancreas"], aux, ensemble=agreement)
    assert quality["liver"] == {"voxels": 4, "confidence": round(200 / 255, 4), "aux_voxels": 4, "agreement": 1.0,
                                "ensemble_agreement": 0.6667, "flagged": True, "flagged_by": ["ensemble"]}
    assert quality["spleen"]["ensemble_agreement"] == 1.0 and not quality["spleen"]["flagged"]
    assert quality["spleen"]["flagged_by"] == []
    line = qc_summary("case", quality)
    assert "liver agreement 1.00, ensemble agreement 0.67, confidence 0.78 FLAGGED (ensemble)" in line


def test_qc_ensemble_agreement_is_that_of_the_members_own_predictions(tmp_path, scan, one_thread):
    config = tiny_config(spacing=SPACING)
    members = [(AgreeingAndDisagreeingHeads(), config), (ShiftedIntensityAndEdge(-13.0), config),
               (ShiftedIntensityAndEdge(-12.0), config)]
    own = []
    for k, member in enumerate(members):
        predict_cases(member, [scan], tmp_path / f"m{k}", progress=False, largest_component=True)
        own.append(labels_of(tmp_path / f"m{k}" / "a.nii.gz"))
    out = tmp_path / "ens"
    predict_cases(members, [scan], out, progress=False, largest_component=True, reports=ReportOptions(qc=True))
    qc = json.loads((out / "qc.json").read_text())
    assert qc["members"] == 3 and qc["ensemble_threshold"] == 0.8 and "ensemble_agreement" in qc["signals"]
    expected = ensemble_agreement(own, 2)
    for k, organ in enumerate(["bright", "edge"]):
        entry = qc["cases"]["a"][organ]
        assert entry["ensemble_agreement"] == pytest.approx(expected[k], abs=1e-4)
        assert entry["flagged"] == bool(entry["flagged_by"])
        assert ("ensemble" in entry["flagged_by"]) == (entry["ensemble_agreement"] < 0.8)
    assert expected[0] < 0.99  # the members differ about class 1
    # the first member's auxiliary heads ran: the two-head agreement is the ensemble's
    assert qc["cases"]["a"]["bright"]["agreement"] is not None


def test_cli_ensemble_of_tct_checkpoints_with_qc(tmp_path, scan, capsys, one_thread):
    models = [checkpoint(tmp_path, f"seed{k}", seed=k) for k in range(3)]
    out = tmp_path / "out"
    status = main(["predict", *map(str, models), str(scan), str(out), "--no-progress", "--qc"])
    printed = capsys.readouterr().out
    assert status == 0
    qc = json.loads((out / "qc.json").read_text())
    for organ in ("bright", "edge"):
        entry = qc["cases"]["a"][organ]
        assert entry["agreement"] is not None and entry["ensemble_agreement"] is not None  # TCT's heads and the members
    assert "or ensemble agreement < 0.8 over 3 members" in printed and "ensemble agreement" in printed.splitlines()[-1]
    index = json.loads((out / "index.json").read_text())
    assert index[0]["models"] == [
        {"checkpoint": str(m.resolve()), "sha256": hashlib.sha256(m.read_bytes()).hexdigest()} for m in models
    ]
    # a rerun skips the case and keeps the models that predicted it
    assert main(["predict", str(models[0]), str(scan), str(out), "--no-progress"]) == 0
    assert json.loads((out / "index.json").read_text())[0]["models"] == index[0]["models"]
