"""DoDNet — dynamic on-demand network (Zhang, Xie, Xia & Shen 2021, "DoDNet: Learning to
segment multi-organ and tumors from multiple partially labeled datasets", CVPR).

The shared 3D U-Net, with its multi-class head replaced by a task-conditioned dynamic head:

    task encoding  T_c = one_hot(c) ∈ {0,1}^N
    image feature  f   = GAP(bottleneck)                    [B, C_b]
    head params    ω_c = controller([f, T_c])               (one linear layer, = a 1×1×1 conv)
    task logit     z_c = head(ω_c, proj(decoder features))  3 dynamic 1×1×1 convs: 8 -> 8 -> 8 -> 1
                                                            (ReLU between), proj: 1×1×1 conv F -> 8

Each task is a binary problem: ``L = mean_{(b, c): c ∈ Φ_b} [BCE(z_c, y^c) + 1 − dice(σ(z_c), y^c)]``,
only over the tasks the sample's dataset annotates (its other classes' targets are unknown).

At inference the backbone runs once and the dynamic head once per class (N passes, counted
in ``head_passes``). Scoring follows the authors (jianpengz/DoDNet ``a_DynConv/evaluate.py``:
``predict_sliding`` blends each task's sigmoid over Gaussian-weighted windows, ``save_nii``
rounds each at ½ and the Dice is taken per task): each task's mask ``σ(z_c) > ½`` is evaluated
on its own, so two tasks may claim one voxel (there is no exclusivity between tasks, paper
§4.2/Fig. 4: a kidney task that also segments the other kidney is counted as the error it
is); ``tctseg run``/``compare`` do this for every task-prompted method
(``Method.task_prompted``). The label map ``tctseg predict`` writes for users merges the N
maps: background where every ``σ(z_c) ≤ ½``, else the most probable task
(:func:`~tctseg.methods.task_prompted.binary_to_multiclass_logits` gives the same as N+1 class scores,
``log [1 − max_c σ(z_c), σ(z_1), …, σ(z_N)]``, for ``predict_logits``).

Choices where the original leaves a detail open or differs from this setting: the backbone
is the shared 3D U-Net (paper App. D), not DoDNet's residual U-Net; the controller reads the
global average of the U-Net bottleneck; the backbone runs once per image and the head once
per task (DoDNet's own inference re-runs only the head as well); during training the head
runs for every task and the loss keeps the annotated ones (one backbone pass per sample
whatever |Φ|); BCE and Dice weighted equally; 8 head channels
(``method.options.head_channels``).

The pieces the task-prompted baselines share (the dynamic head, :class:`TaskPromptedMethod`,
:func:`binary_to_multiclass_logits`) are in :mod:`tctseg.methods.task_prompted`; the loss is
:func:`tctseg.losses.binary_task.binary_task_losses`.
"""

from __future__ import annotations

import torch

from tctseg.methods.base import build_backbone
from tctseg.methods.options import read_options
from tctseg.methods.registry import register_method
from tctseg.methods.task_prompted import (
    ControlledDynamicHeads,
    DynamicHeadOptions,
    TaskPromptedMethod,
    backbone_forward,
)
from tctseg.network import UNet3D


@register_method
class DoDNetMethod(TaskPromptedMethod):
    name = "dodnet"
    description = "DoDNet: one-hot task code -> controller -> dynamic binary head per class (Zhang et al. 2021)"

    def __init__(self, backbone: UNet3D, num_classes: int, head_channels: int = 8):
        super().__init__()
        self.num_classes = num_classes
        self.network = backbone
        self.heads = ControlledDynamicHeads(backbone.out_channels, backbone.bottleneck_channels, num_classes,
                                            head_channels)
        self.register_buffer("task_codes", torch.eye(num_classes), persistent=False)

    @classmethod
    def from_config(cls, config) -> DoDNetMethod:
        options = read_options(DynamicHeadOptions, config.method.options)
        return cls(build_backbone(config), config.num_classes, options.head_channels)

    def task_logits(self, image: torch.Tensor, batch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        bottleneck, features = backbone_forward(self.network, image)
        return self.heads(bottleneck, features, self.task_codes)
