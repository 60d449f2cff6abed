"""Hermes — context-prior learning (Gao, Li, Liu, Zhou, Zhang & Metaxas 2024, "Training like a
medical resident: Context-prior learning toward universal medical image segmentation", CVPR).

Official code: yhygao/universal-medical-image-segmentation — ``model/dim3/hermes_unet.py``
(``Hermes_UNet``), ``model/dim3/hermes_unet_utils.py`` (``PriorInitFusionLayer``),
``model/dim3/hermes_utils.py`` (``HierarchyPriorClassifier``, ``ModalityClassifier``),
``training/losses.py`` (``BinaryDiceLoss``, ``BinaryCrossEntropyLoss``), ``train.py``
(``train_epoch``) and ``config/universal/hermes_resunet_3d.yaml``.

The shared 3D U-Net with learnable *prior tokens* that interact with its features at several
scales, and a prototype head that gives one binary map per task:

* **Priors.** Every fusion scale s (channels C_s) owns N task prior tokens ``T_s ∈ R^{N×C_s}``
  and, per modality, K = 10 modality tokens ``M_s ∈ R^{M×K×C_s}`` (official
  ``PriorInitFusionLayer(l=10)``); a sample uses ``P = [T_s; M_s[m_b]] ∈ R^{(N+K)×C_s}``.
* **Only the sample's tasks** (official ``train.py``: the batch's ``tgt_idx`` lists each
  sample's dataset's tasks). In training a sample's task tokens are those it annotates:
  the others are masked out of every attention that reads tokens (key padding), so they
  neither inform the sample's other tokens nor its features. At evaluation likewise: the
  official ``training/validation.py`` and ``inference/inference3d.py`` pass the test dataset's
  own task list, and ``tctseg run``/``compare`` give each test case the classes its dataset
  annotates (:meth:`HermesMethod.task_logits_for`, the same masking as in training; the tasks
  not asked get the logit :data:`NOT_ASKED_LOGIT`, σ = 0, since the official output has no
  channel for them). A scan whose annotations nobody knows (``tctseg predict``) uses all N.
* **Prior fusion** (after the encoder's last ``k`` stages, the bottleneck and the decoder's
  first ``k`` stages, k = min(2, depth − 2): five scales for depth 5, the official
  ``prior_init_fuse_2..4``, ``prior_fuse_5..6``). Each block, pre-norm and residual:
  ``P ← P + SelfAttn(P)``; ``P ← P + CrossAttn(P → X)`` (tokens read the features
  ``X ∈ R^{L×C_s}``); ``P ← P + MLP(P)``; ``X ← X + CrossAttn(X → P)`` (features read the
  tokens). 2 blocks per scale, 4 at the bottleneck (official ``block_num``).
* **Posterior prototypes.** The posterior task tokens of all scales are concatenated per task
  and mapped by an MLP to a prototype ``π_c ∈ R^F`` in the decoder's last feature space;
  the task logit is ``z_c(x) = ⟨π_c, X_final(x)⟩ + b_c`` (official ``HierarchyPriorClassifier``).
* **Modality head** (official ``ModalityClassifier``): the K posterior modality tokens of all
  scales, concatenated per token → LayerNorm → mean over the tokens → Linear → GELU →
  Linear → M modality logits. Not used at inference.
* **Loss** (official ``train.py``): ``BCE + adaptive Tversky-Dice + 0.01 · CE(modality)``.
  BCE: per (sample, annotated task) mean over voxels, then the mean over those pairs
  (``BinaryCrossEntropyLoss``). Adaptive Tversky-Dice
  (:func:`tctseg.losses.binary_task.adaptive_tversky_dice_loss`, ``BinaryDiceLoss``):
  ``1 − TP / (TP + α·FP + (1−α)·FN + ε)`` with
  ``α = clamp(FP / (FP + FN + ε), 0.2, 0.8)`` per pair, ε = 1e-6. 0.01: ``loss_mod_weight``.
* **Scoring.** As DoDNet (``task_prompted``): each task's mask ``σ(z_c) > ½`` is evaluated on
  its own in ``tctseg run``/``compare``, overlaps allowed; the label map ``tctseg predict``
  writes for users is their argmax (background where every ``σ(z_c) ≤ ½``).

Options: ``method.options.modalities`` (default ``[CT, MR]``); a batch may carry ``modality``
(int64 ``[B]``, indices into that list), otherwise — and at inference — the model's modality
is used (``method.options.modality``, else the first training dataset's ``modality``, else
CT); ``modality_tokens`` (10), ``modality_loss_weight`` (0.01), ``blocks`` (2).

What still differs from the official code:

* Backbone: the shared 3D U-Net of every method here (the TCT paper's fairness rule), not
  the official ResUNet (BasicBlocks, base 32, 10× base at the bottleneck, trilinear
  upsampling). With the paper's width 16, depth 5, N = 5 the model has 11.5 M parameters
  (TCT paper Tab. 10: 14.9 M).
* Fusion block: the official ``PriorAttentionBlock`` has no token self-attention and adds a
  feature MLP after the feature cross-attention (an MLP at every voxel of the fused
  scales); its heads are ``C // 32`` of size 32 (ours ``max(1, C // 32)`` heads of size
  C/heads, ``nn.MultiheadAttention``). Priors are initialised N(0, 0.02²), not Xavier.
* Prototype MLP: official LayerNorm(ΣC) → Mlp(ΣC → F) → Mlp(F → F), no bias on the
  product; ours Linear(ΣC, 4F) → GELU → Linear(4F, F) and a per-task bias.
* Task-token padding: the official batch pads each sample's task list with a null token
  that still takes part in the attention (loss weight 0); here the other tasks' tokens are
  masked out instead, so no null token exists.
* Modality labels: our sampler gives none, so every training sample uses the model's
  modality; the modality loss then learns one constant class (as the official loss does on
  a one-modality training set, the TCT paper's CT and MR benchmarks).
* Inference on a new scan (``tctseg predict``, and the validation during training): all N
  task tokens in one pass. The official code has no such case: it always passes a test
  dataset's own task list, which is what ``run``/``compare`` do for their test sets (a fully
  labeled set: all N, the same forward).
* Training recipe: the shared trainer (optimiser, schedule, patch size, sampler), not the
  official LAMB at 2e-3 with warm-up, EMA evaluation and 128³ crops.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tctseg.errors import ConfigError
from tctseg.losses.binary_task import adaptive_tversky_dice_loss, binary_task_losses
from tctseg.methods.base import LossOutput, build_backbone
from tctseg.methods.options import option
from tctseg.methods.registry import register_method
from tctseg.methods.task_prompted import TaskPromptedMethod, backbone_forward
from tctseg.network import UNet3D
from tctseg.settings import MODALITIES

# official hermes_unet_utils.PriorInitFusionLayer(l=10): tokens per modality
MODALITY_TOKENS = 10
# official config/universal/hermes_resunet_3d.yaml: loss_mod_weight
MODALITY_LOSS_WEIGHT = 0.01
# the logit of a task not asked for (task_logits_for): σ = 0 in float32 and float16
NOT_ASKED_LOGIT = -1e4


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

    def forward(
        self, tokens: torch.Tensor, features: torch.Tensor, ignored: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``ignored`` ``[B, T]`` bool: tokens no other token and no feature reads (another
        dataset's tasks); they still read the features, their outputs go unused."""
        t = self.norm_self(tokens)
        tokens = tokens + self.self_attn(t, t, t, key_padding_mask=ignored, need_weights=False)[0]
        context = self.norm_context(features)
        tokens = tokens + self.token_to_feature(self.norm_query(tokens), context, context, need_weights=False)[0]
        tokens = tokens + self.mlp(self.norm_mlp(tokens))
        t = self.norm_tokens(tokens)
        features = features + self.feature_to_token(
            self.norm_features(features), t, t, key_padding_mask=ignored, need_weights=False
        )[0]
        return tokens, features


class PriorFusion(nn.Module):
    """Learnable task and modality priors of one scale, fused with its feature map.

    ``forward(x [B, C, *S], modality [B], tasks [B, N] bool or None)`` →
    ``(x' [B, C, *S], posterior tokens [B, N+K, C])``: the N task tokens, then the K tokens of
    the sample's modality. ``tasks``: the task tokens a sample uses (its dataset's tasks);
    None (inference): all.
    """

    def __init__(self, channels: int, num_tasks: int, num_modalities: int, blocks: int,
                 modality_tokens: int = MODALITY_TOKENS):
        super().__init__()
        self.task_priors = nn.Parameter(torch.randn(num_tasks, channels) * 0.02)
        self.modality_priors = nn.Parameter(torch.randn(num_modalities, modality_tokens, channels) * 0.02)
        heads = max(1, channels // 32)
        self.blocks = nn.ModuleList(FusionBlock(channels, heads) for _ in range(blocks))

    def forward(
        self, x: torch.Tensor, modality: torch.Tensor, tasks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
        tokens = torch.cat(
            [self.task_priors.unsqueeze(0).expand(b, -1, -1), self.modality_priors[modality]], dim=1
        ).to(x.dtype)
        ignored = None
        if tasks is not None:
            modality_used = torch.ones(b, self.modality_priors.shape[1], dtype=torch.bool, device=x.device)
            ignored = ~torch.cat([tasks.to(device=x.device, dtype=torch.bool), modality_used], dim=1)
        features = x.flatten(2).transpose(1, 2)  # [B, L, C]
        for block in self.blocks:
            tokens, features = block(tokens, features, ignored)
        return features.transpose(1, 2).reshape(b, c, *spatial), tokens


class ModalityClassifier(nn.Module):
    """Official ``hermes_utils.ModalityClassifier``: the posterior modality tokens of every
    scale, concatenated per token ``[B, K, ΣC]`` → LayerNorm → mean over the K tokens →
    Linear(ΣC, ΣC) → GELU → Linear(ΣC, M) → modality logits ``[B, M]``."""

    def __init__(self, channels: int, num_modalities: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.GELU(), nn.Linear(channels, num_modalities))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(tokens).mean(1))


def fusion_points(depth: int) -> list[tuple[str, int]]:
    """Stages after which the priors fuse: the encoder's last k, the bottleneck, the decoder's first k."""
    k = min(2, depth - 2)
    encoder = [("encoder", s) for s in range(depth - 1 - k, depth - 1)]
    decoder = [("decoder", s) for s in range(k)]
    return [*encoder, ("bottleneck", 0), *decoder]


@register_method
class HermesMethod(TaskPromptedMethod):
    name = "hermes"
    description = "Hermes: task/modality prior tokens cross-attending at several scales, prototype head (Gao 2024)"

    def __init__(
        self,
        backbone: UNet3D,
        num_classes: int,
        modalities: tuple[str, ...] = MODALITIES,
        default_modality: str = "CT",
        blocks: int = 2,
        modality_tokens: int = MODALITY_TOKENS,
        modality_loss_weight: float = MODALITY_LOSS_WEIGHT,
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
            channels = backbone.stage_channels(kind, index)
            n_blocks = 2 * blocks if kind == "bottleneck" else blocks
            self.fusions[f"{kind}{index}"] = PriorFusion(channels, num_classes, len(self.modalities), n_blocks,
                                                         modality_tokens)
        token_channels = sum(backbone.stage_channels(kind, index) for kind, index in self.points)
        self.modality_classifier = ModalityClassifier(token_channels, len(self.modalities))
        self.modality_loss_weight = modality_loss_weight
        features = backbone.out_channels
        self.prototype_mlp = nn.Sequential(
            nn.Linear(token_channels, 4 * features), nn.GELU(), nn.Linear(4 * features, features)
        )
        self.prototype_bias = nn.Parameter(torch.zeros(num_classes))
        self.prototype_passes = 0  # task maps computed so far (N per image)

    @classmethod
    def from_config(cls, config) -> HermesMethod:
        options = config.method.options
        modalities = options.get("modalities", list(MODALITIES))
        if not isinstance(modalities, list) or not modalities or not all(isinstance(m, str) for m in modalities):
            raise ConfigError(f"method.options.modalities: expected a list of names, got {modalities!r}")
        trained_on = [d.modality for d in config.datasets_with_role("train") if d.modality]
        default = str(options.get("modality", trained_on[0] if trained_on else modalities[0]))
        if option(options, "modality_tokens", MODALITY_TOKENS, int) < 1:
            raise ConfigError("method.options.modality_tokens: must be >= 1")
        if option(options, "modality_loss_weight", MODALITY_LOSS_WEIGHT) < 0:
            raise ConfigError("method.options.modality_loss_weight: must be >= 0")
        return cls(
            build_backbone(config),
            config.num_classes,
            tuple(modalities),
            default,
            option(options, "blocks", 2, int),
            option(options, "modality_tokens", MODALITY_TOKENS, int),
            option(options, "modality_loss_weight", MODALITY_LOSS_WEIGHT),
        )

    def modality_of(self, image: torch.Tensor, batch: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """``[B]`` modality indices: the batch's ``modality`` when it has one, else the model's."""
        if batch is not None and "modality" in batch:
            return batch["modality"].long().to(image.device)
        return torch.full((image.shape[0],), self.default_modality, dtype=torch.long, device=image.device)

    def task_logits(self, image: torch.Tensor, batch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.outputs(image, batch)[0]

    def task_logits_for(self, image: torch.Tensor, tasks: Sequence[int] | None = None) -> torch.Tensor:
        """The official evaluation (``validation.py``, ``inference3d.py``: ``net(img, tgt_idx,
        mod_idx)`` with the test dataset's tasks): only the task tokens of ``tasks`` (global ids
        1..N) take part, masked as in training (:meth:`outputs` with ``annotated``); the other
        tasks' logits are :data:`NOT_ASKED_LOGIT`. None or every task: :meth:`task_logits`, all N."""
        if tasks is None:
            return self.task_logits(image)
        asked = sorted({int(t) for t in tasks})
        if any(not 1 <= t <= self.num_classes for t in asked):
            raise ValueError(f"tasks: global class ids 1..{self.num_classes} expected, got {list(tasks)}")
        if len(asked) == self.num_classes:
            return self.task_logits(image)
        annotated = torch.zeros(image.shape[0], self.num_classes, dtype=torch.bool, device=image.device)
        annotated[:, [t - 1 for t in asked]] = True
        logits = self.outputs(image, {"annotated": annotated})[0]
        not_asked = ~annotated.view(*annotated.shape, *([1] * (logits.ndim - 2)))
        return logits.masked_fill(not_asked, NOT_ASKED_LOGIT)

    def forward(self, batch: dict[str, torch.Tensor], epoch: int) -> LossOutput:
        """Official ``train.py``: BCE + adaptive Tversky-Dice on the sample's tasks, plus 0.01 ×
        the modality cross-entropy."""
        logits, modality_logits = self.outputs(batch["image"], batch)
        bce, _ = binary_task_losses(logits, batch["labels"], batch["annotated"])
        dice = adaptive_tversky_dice_loss(logits, batch["labels"], batch["annotated"])
        modality = F.cross_entropy(modality_logits.float(), self.modality_of(batch["image"], batch))
        total = bce + dice + self.modality_loss_weight * modality
        return LossOutput(total, {"main": dice.detach(), "bce": bce.detach(), "modality": modality.detach()})

    def outputs(
        self, image: torch.Tensor, batch: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(task logits [B, N, *S], modality logits [B, M])``. With a batch (training) a
        sample's task tokens are those it annotates (its dataset's tasks); without, all N."""
        modality = self.modality_of(image, batch)
        tasks = batch["annotated"] if batch is not None and "annotated" in batch else None
        posteriors: list[torch.Tensor] = []
        modality_posteriors: list[torch.Tensor] = []

        def fuse(kind: str, index: int, x: torch.Tensor) -> torch.Tensor:
            key = f"{kind}{index}"
            if key not in self.fusions:
                return x
            x, tokens = self.fusions[key](x, modality, tasks)
            posteriors.append(tokens[:, : self.num_classes])
            modality_posteriors.append(tokens[:, self.num_classes :])
            return x

        _, features = backbone_forward(self.network, image, fuse)
        modality_logits = self.modality_classifier(torch.cat(modality_posteriors, dim=2))
        prototypes = self.prototype_mlp(torch.cat(posteriors, dim=2))  # [B, N, F]
        maps = []
        for c in range(self.num_classes):
            # ⟨π_c, X(x)⟩ over the feature channels
            maps.append(torch.einsum("bf,bf...->b...", prototypes[:, c].to(features.dtype), features))
            self.prototype_passes += 1
        logits = torch.stack(maps, dim=1)
        logits = logits + self.prototype_bias.view(1, -1, *([1] * (logits.ndim - 2))).to(logits.dtype)
        return logits, modality_logits
