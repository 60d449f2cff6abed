import pytest
import torch

from tctseg.config import config_from_dict
from tctseg.errors import ConfigError
from tctseg.methods import available_methods, build_method

CLASSES = ["liver", "spleen", "kidney"]


def make_config(**method):
    return config_from_dict(
        {
            "classes": CLASSES,
            "datasets": [],
            "network": {"width": 8, "depth": 3, "norm": "instance"},
            "train": {"epochs": 10},
            "method": method,
        }
    )


def fixed_batch():
    """Two partially labeled samples: one annotates liver+spleen, the other kidney only."""
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(2, 16, 16, 8, dtype=torch.long)
    labels[0, 2:8, 2:8, 2:6] = 1
    labels[0, 9:14, 9:14, 2:6] = 2
    labels[1, 4:10, 8:14, 1:5] = 3
    image = labels.float().unsqueeze(1) * 0.3 + 0.05 * torch.randn(2, 1, 16, 16, 8, generator=g)
    annotated = torch.tensor([[True, True, False], [False, False, True]])
    return {"image": image, "labels": labels, "annotated": annotated}


def test_registry_lists_tct_and_tal():
    assert {"tct", "tal"} <= set(available_methods())
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        build_method(make_config(name="nope"))


@pytest.mark.parametrize("name", ["tct", "tal"])
def test_overfitting_one_batch_makes_the_main_loss_fall(name):
    torch.manual_seed(0)
    method = build_method(make_config(name=name))
    optimizer = torch.optim.Adam(method.parameters(), lr=3e-3)
    batch = fixed_batch()
    history = []
    for step in range(40):
        out = method(batch, epoch=step // 4)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        history.append(out.parts["main"].item())
    assert history[-1] < 0.6 * history[0], history


def test_tct_reports_every_part_and_trains_log_vars():
    method = build_method(make_config(name="tct"))
    out = method(fixed_batch(), epoch=2)
    losses = {"main", "aux", "consistency", "w", "log_var_1", "log_var_2", "kept_fraction"}
    ratios = {"filter_absent", "filter_kept_present", "filter_iou_present"}
    ratios |= {f"filter_{kind}_{c}" for kind in ("kept", "term") for c in method.class_names}
    assert set(out.parts) == losses | {f"{r}:{end}" for r in ratios for end in ("num", "den")}
    assert method.class_names == make_config(name="tct").classes
    # w(2) with ramp-up 0.4 · 10 = 4 epochs: exp(−5·0.5²)
    assert out.parts["w"].item() == pytest.approx(torch.exp(torch.tensor(-1.25)).item())
    assert 0.0 <= out.parts["kept_fraction"].item() <= 1.0
    out.total.backward()
    assert method.uncertainty.log_vars.grad.abs().sum() > 0
    expected = out.parts["main"] + out.parts["aux"] + out.parts["w"] * out.parts["consistency"]  # s = 0
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_tct_ablation_switches():
    uwl = build_method(make_config(name="tct", weighting="uwl"))
    assert uwl.uncertainty.log_vars.shape == (1 + len(CLASSES),)
    assert "log_var_4" in uwl(fixed_batch(), 0).parts
    fixed = build_method(make_config(name="tct", weighting="fixed", consistency=False))
    out = fixed(fixed_batch(), 0)
    assert fixed.uncertainty is None and "consistency" not in out.parts
    assert out.total.item() == pytest.approx((out.parts["main"] + out.parts["aux"]).item(), rel=1e-5)
    confident = build_method(make_config(name="tct", filter="confidence"))
    assert confident.filter == "confidence" and confident.confidence_threshold == 0.5
    out = confident(fixed_batch(), 0)
    assert {f"filter_confident_{c}:num" for c in CLASSES} <= set(out.parts)


def test_tal_has_no_auxiliary_heads_and_inference_is_the_main_head():
    tal = build_method(make_config(name="tal"))
    tct = build_method(make_config(name="tct"))
    assert tal.network.aux_heads is None
    tct.eval()
    with torch.no_grad():
        logits = tct.predict_logits(torch.randn(1, 1, 16, 16, 8))
    assert logits.shape == (1, len(CLASSES) + 1, 16, 16, 8)
