"""Hermes — context-prior learning (Gao, Li, Liu, Zhou, Zhang & Metaxas 2024, "Training like a
medical resident: Context-prior learning toward universal medical image segmentation", CVPR).

The shared 3D U-Net with learnable *prior tokens* that interact with its features at several
scales, and a prototype head that gives one binary map per task:

* **Priors.** Every fusion scale s (channels C_s) owns N task prior tokens ``T_s ∈ R^{N×C_s}``
  and M modality prior tokens ``M_s ∈ R^{M×C_s}``; a sample uses all N task tokens and the
  token of its modality: ``P = [T_s; M_s[m_b]] ∈ R^{(N+1)×C_s}``.
* **Prior fusion** (after the encoder's last ``k`` stages, the bottleneck and the decoder's
  first ``k`` stages, k = min(2, depth − 2): five scales for the paper's depth 5, as Hermes'
  U-Net). Each block, pre-norm and residual:
  ``P ← P + SelfAttn(P)``; ``P ← P + CrossAttn(P → X)`` (tokens read the features
  ``X ∈ R^{L×C_s}``); ``P ← P + MLP(P)``; ``X ← X + CrossAttn(X → P)`` (features read the
  tokens: L·(N+1) attention, lightweight). The updated ("posterior") tokens leave the layer.
* **Posterior prototypes.** The posterior task tokens of all scales are concatenated per task
  and mapped by an MLP to a prototype ``π_c ∈ R^F`` in the decoder's last feature space;
  the task logit is the dot product ``z_c(x) = ⟨π_c, X_final(x)⟩ + b``. The prototype is a
  *posterior*: it depends on the image through the attention, so each task's classifier
  adapts to the case (Hermes' "posterior prototype" idea).
* **Loss.** Binary per task, BCE + Dice, only over the tasks the sample annotates.
* **Scoring.** As DoDNet (``task_prompted``): each task's mask ``σ(z_c) > ½`` is evaluated on
  its own in ``tctseg run``/``compare``, overlaps allowed; the label map ``tctseg predict``
  writes for users is their argmax (background where every ``σ(z_c) ≤ ½``).

Choices where the original leaves a detail open or differs from this setting: every task
token takes part in every sample (Hermes feeds only the tokens of the sample's dataset's
tasks); with all N tokens the training context equals the inference context and batches of
mixed datasets need no grouping. The loss still supervises annotated tasks only. One network
pass yields all N maps (N prototype products, counted in ``prototype_passes``). Modality
tokens: ``method.options.modalities`` (default ``[CT, MR]``); a batch may carry
``modality`` (int64 ``[B]``, indices into that list), otherwise — and at inference — the
model's modality is used (``method.options.modality``, else the first training dataset's
``modality``, else CT). Hermes' auxiliary modality-classification loss is left out (one
modality per training set in this paper's benchmarks makes it trivial). No positional
encoding (the conv features carry position). Blocks per scale: 2, and 4 at the bottleneck
(``method.options.blocks`` sets the non-bottleneck count); attention heads ``max(1, C_s // 32)``.
With the paper's width 16, depth 5, N = 5 the model has about 11 M parameters (paper
Tab. 10: 14.9 M for Hermes on its 3D U-Net).
"""

from __future__ import annotations

import torch
from torch import nn

from tctseg.errors import ConfigError
from tctseg.methods.dodnet import TaskPromptedMethod, backbone_forward, build_backbone
from tctseg.methods.me import option
from tctseg.methods.registry import register_method
from tctseg.network import UNet3D

DEFAULT_MODALITIES = ("CT", "MR")


class FusionBlock(nn.Module):
    """One two-way attention block between prior tokens ``[B, T, C]`` and features ``[B, L, C]``."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.norm_self = nn.LayerNorm(channels)
        self.self_attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm_query = nn.LayerNorm(channels)
        self.norm_context = nn.LayerNorm(channels)
        self.token_to_feature = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.norm_features = nn.LayerNorm(channels)
        self.norm_tokens = nn.LayerNorm(channels)
        self.feature_to_token = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, tokens: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.norm_self(tokens)
        tokens = tokens + self.self_attn(t, t, t, need_weights=False)[0]
        context = self.norm_context(features)
        tokens = tokens + self.token_to_feature(self.norm_query(tokens), context, context, need_weights=False)[0]
        tokens = tokens + self.mlp(self.norm_mlp(tokens))
        t = self.norm_tokens(tokens)
        features = features + self.feature_to_token(self.norm_features(features), t, t, need_weights=False)[0]
        return tokens, features


class PriorFusion(nn.Module):
    """Learnable task and modality priors of one scale, fused with its feature map.

    ``forward(x [B, C, *S], modality [B])`` → ``(x' [B, C, *S], posterior tokens [B, N+1, C])``.
    """

    def __init__(self, channels: int, num_tasks: int, num_modalities: int, blocks: int):
        super().__init__()
        self.task_priors = nn.Parameter(torch.randn(num_tasks, channels) * 0.02)
        self.modality_priors = nn.Parameter(torch.randn(num_modalities, channels) * 0.02)
        heads = max(1, channels // 32)
        self.blocks = nn.ModuleList(FusionBlock(channels, heads) for _ in range(blocks))

    def forward(self, x: torch.Tensor, modality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
        tokens = torch.cat(
            [self.task_priors.unsqueeze(0).expand(b, -1, -1), self.modality_priors[modality].unsqueeze(1)], dim=1
        ).to(x.dtype)
        features = x.flatten(2).transpose(1, 2)  # [B, L, C]
        for block in self.blocks:
            tokens, features = block(tokens, features)
        return features.transpose(1, 2).reshape(b, c, *spatial), tokens


def fusion_points(depth: int) -> list[tuple[str, int]]:
    """Stages after which the priors fuse: the encoder's last k, the bottleneck, the decoder's first k."""
    k = min(2, depth - 2)
    encoder = [("encoder", s) for s in range(depth - 1 - k, depth - 1)]
    decoder = [("decoder", s) for s in range(k)]
    return [*encoder, ("bottleneck", 0), *decoder]


def stage_channels(width: int, kind: str, index: int, depth: int) -> int:
    """Output channels of a U-Net stage (see :class:`~tctseg.network.UNet3D`)."""
    if kind == "encoder":
        return width * 2**index
    if kind == "bottleneck":
        return width * 2 ** (depth - 1)
    return width * 2 ** (depth - 2 - index)


@register_method
class HermesMethod(TaskPromptedMethod):
    name = "hermes"
    description = "Hermes: task/modality prior tokens cross-attending at several scales, prototype head (Gao 2024)"

    def __init__(
        self,
        backbone: UNet3D,
        num_classes: int,
        modalities: tuple[str, ...] = DEFAULT_MODALITIES,
        default_modality: str = "CT",
        blocks: int = 2,
    ):
        super().__init__()
        if default_modality not in modalities:
            raise ConfigError(f"method.options.modality: {default_modality!r} is not in modalities {list(modalities)}")
        self.num_classes = num_classes
        self.modalities = tuple(modalities)
        self.default_modality = self.modalities.index(default_modality)
        self.network = backbone
        self.points = fusion_points(backbone.depth)
        self.fusions = nn.ModuleDict()
        for kind, index in self.points:
            channels = stage_channels(backbone.width, kind, index, backbone.depth)
            n_blocks = 2 * blocks if kind == "bottleneck" else blocks
            self.fusions[f"{kind}{index}"] = PriorFusion(channels, num_classes, len(self.modalities), n_blocks)
        token_channels = sum(stage_channels(backbone.width, k, i, backbone.depth) for k, i in self.points)
        features = backbone.out_channels
        self.prototype_mlp = nn.Sequential(
            nn.Linear(token_channels, 4 * features), nn.GELU(), nn.Linear(4 * features, features)
        )
        self.prototype_bias = nn.Parameter(torch.zeros(num_classes))
        self.prototype_passes = 0  # task maps computed so far (N per image)

    @classmethod
    def from_config(cls, config) -> HermesMethod:
        options = config.method.options
        modalities = options.get("modalities", list(DEFAULT_MODALITIES))
        if not isinstance(modalities, list) or not modalities or not all(isinstance(m, str) for m in modalities):
            raise ConfigError(f"method.options.modalities: expected a list of names, got {modalities!r}")
        trained_on = [d.modality for d in config.datasets_with_role("train") if d.modality]
        default = str(options.get("modality", trained_on[0] if trained_on else modalities[0]))
        return cls(
            build_backbone(config),
            config.num_classes,
            tuple(modalities),
            default,
            option(options, "blocks", 2, int),
        )

    def task_logits(self, image: torch.Tensor, batch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        b = image.shape[0]
        if batch is not None and "modality" in batch:
            modality = batch["modality"].long().to(image.device)
        else:
            modality = torch.full((b,), self.default_modality, dtype=torch.long, device=image.device)
        posteriors: list[torch.Tensor] = []

        def fuse(kind: str, index: int, x: torch.Tensor) -> torch.Tensor:
            key = f"{kind}{index}"
            if key not in self.fusions:
                return x
            x, tokens = self.fusions[key](x, modality)
            posteriors.append(tokens[:, : self.num_classes])  # task tokens only
            return x

        _, features = backbone_forward(self.network, image, fuse)
        prototypes = self.prototype_mlp(torch.cat(posteriors, dim=2))  # [B, N, F]
        maps = []
        for c in range(self.num_classes):
            # ⟨π_c, X(x)⟩ over the feature channels
            maps.append(torch.einsum("bf,bf...->b...", prototypes[:, c].to(features.dtype), features))
            self.prototype_passes += 1
        logits = torch.stack(maps, dim=1)
        return logits + self.prototype_bias.view(1, -1, *([1] * (logits.ndim - 2))).to(logits.dtype)
