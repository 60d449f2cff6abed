"""The fast training step computes what the step of commit 310c00e computed.

Three changes made the CPU step faster (BENCHMARKS.md, "Where a training step's time goes"):
an instance norm that keeps channels-last tensors as they are (no channels-first round trip),
each decoder stage's first convolution as two convolutions over the upsampled and the skip
features (no concatenation), and TCT's two heads as one convolution. Here the old computation
is rebuilt beside the new one — ``nn.InstanceNorm3d`` layers, ``torch.cat`` and the two heads
run one after the other — from the same weights, and a fixed-seed 20-step Adam run of each must give the same losses within float32
tolerance.
"""

from __future__ import annotations

import copy
import types

import pytest
import torch

from tctseg.config import config_from_dict
from tctseg.methods import build_method
from tctseg.network.segmentation import NetworkOutput
from tctseg.network.unet import InstanceNorm
from tctseg.training.trainer import build_optimizer

CLASSES = ["liver", "spleen", "left_kidney", "right_kidney"]


def chaos_like_config(method: str):
    """configs/chaos_t2.yaml's network and optimiser at a test's size."""
    return config_from_dict(
        {
            "classes": CLASSES,
            "datasets": [],
            "network": {"width": 8, "depth": 4, "norm": "instance", "channels_last": True},
            "train": {"epochs": 4, "optimizer": "adam", "lr": 1e-3},
            "method": {"name": method},
        }
    )


def old_network(network: torch.nn.Module) -> torch.nn.Module:
    """A copy computing as at 310c00e: torch's InstanceNorm3d, the decoder's skip connections
    concatenated before their first convolution, the two heads run separately."""
    old = copy.deepcopy(network)
    for module in list(old.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, InstanceNorm):
                norm = torch.nn.InstanceNorm3d(child.num_features, eps=child.eps, affine=True)
                norm.load_state_dict(child.state_dict())
                setattr(module, name, norm)

    for block in old.backbone.decoder:
        block.forward_concatenated = lambda first, second, block=block: block(torch.cat([first, second], dim=1))

    def forward(self, image, aux=None):
        features = self.backbone(image)
        run_aux = self.training if aux is None else aux
        return NetworkOutput(self.main_head(features), self.aux_heads(features) if run_aux else None)

    old.forward = types.MethodType(forward, old)
    return old


def batches(steps: int):
    """Fixed partially labelled CHAOS-like batches: each sample annotates one organ."""
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        labels = torch.zeros(2, 32, 32, 16, dtype=torch.long)
        annotated = torch.zeros(2, len(CLASSES), dtype=torch.bool)
        for b in range(2):
            organ = (2 * step + b) % len(CLASSES) + 1
            x, y = (int(v) for v in torch.randint(2, 18, (2,), generator=g))
            labels[b, x : x + 12, y : y + 10, 3:12] = organ
            annotated[b, organ - 1] = True
        image = labels.float().unsqueeze(1) * 0.2 + 0.1 * torch.randn(2, 1, 32, 32, 16, generator=g)
        yield {"image": image.contiguous(memory_format=torch.channels_last_3d), "labels": labels, "annotated": annotated}


def losses_and_gradients(method: torch.nn.Module, batch, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One step's forward and backward: ``[total, aux, consistency, main]`` (the parts the
    method has) and every parameter's gradient."""
    method.zero_grad(set_to_none=True)
    out = method(batch, epoch)
    out.total.backward()
    values = [out.total] + [v for k, v in sorted(out.parts.items()) if k in ("main", "aux", "consistency")]
    return torch.stack([v.detach() for v in values]), {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["tct", "tal"])
def test_every_step_of_a_fixed_seed_20_step_run_computes_the_old_losses_and_gradients(name):
    """Along the new code's own 20-step Adam run, the old computation on the same weights and
    batch gives the same losses and gradients, step by step, within float32 tolerance.

    (Comparing two separately trained trajectories instead is no test of what is computed:
    Adam turns float32 rounding into different weights within a few steps. Measured on this
    test's data: perturbing the image by one ulp moves the OLD code's own 20-step losses by up
    to 0.06 % (TAL) and 1 % (TCT total; 41 % for the filtered consistency term, whose IoU
    filter is discrete), about what the new code's trajectory differs from the old one.)
    """
    config = chaos_like_config(name)
    torch.manual_seed(0)
    new = build_method(config).to(memory_format=torch.channels_last_3d).train()
    old = copy.deepcopy(new)
    old.network = old_network(new.network)
    assert any(isinstance(m, torch.nn.InstanceNorm3d) for m in old.modules())
    assert not any(isinstance(m, torch.nn.InstanceNorm3d) for m in new.modules())
    optimizer = build_optimizer(new.parameters(), config)
    normalised_biases = {
        f"{name}.{index}.bias"
        for name, block in new.named_modules()
        if isinstance(block, torch.nn.Sequential)
        for index, (conv, norm) in enumerate(zip(block, list(block)[1:]))
        if isinstance(conv, torch.nn.Conv3d) and isinstance(norm, InstanceNorm)
    }
    assert normalised_biases
    totals = []
    for step, batch in enumerate(batches(20)):
        old.load_state_dict(new.state_dict())
        old_losses, old_grads = losses_and_gradients(old, batch, step // 5)
        new_losses, new_grads = losses_and_gradients(new, batch, step // 5)
        torch.testing.assert_close(new_losses, old_losses, rtol=1e-5, atol=1e-6, msg=lambda m: f"step {step}: {m}")
        assert new_grads.keys() == old_grads.keys()
        errors = {
            key: float((grad - old_grads[key]).norm() / old_grads[key].norm().clamp_min(1e-12))
            for key, grad in new_grads.items()
            if key not in normalised_biases  # a conv bias before an instance norm: 0 in exact arithmetic, rounding noise in both
        }
        # relative to each tensor's size. Not 1e-5 as the losses: a pre-activation within
        # float32 rounding of 0 may fall on the other side of a ReLU in one of the two
        # (measured: ONE such voxel of 262,144 moves the early layers' gradients by 1.5e-3,
        # against float64 as well as against each other); a wrong formula moves them by O(1)
        worst = max(errors, key=errors.get)
        assert errors[worst] < 5e-2, f"step {step}: gradient of {worst} differs by {errors[worst]:.2e} (relative)"
        typical = sorted(errors.values())[len(errors) // 2]
        assert typical < 1e-3, f"step {step}: the median gradient differs by {typical:.2e} (relative)"
        optimizer.step()
        totals.append(float(new_losses[0]))
    assert abs(totals[-1] - totals[0]) > 1e-2  # the run trains: the weights really moved
