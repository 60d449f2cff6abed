"""CLIP-Driven universal model (Liu, Zhang, Chen, Xiao, Lu, Landman, Yuan, Yuille, Tang &
Zhou 2023, "CLIP-driven universal model for organ segmentation and tumor detection", ICCV).

Followed: the authors' code, ljwztc/CLIP-Driven-Universal-Model — ``model/Universal_model.py``
(``Universal_model.__init__``, ≈ lines 32–55 and 94–108: ``precls_conv``, ``GAP``,
``controller``, ``text_to_vision``; ``forward``, ``parse_dynamic_params``, ``heads_forward``),
``utils/loss.py`` (``BinaryDiceLoss``, ``DiceLoss``, ``Multi_BCELoss``) and ``train.py``
(``train``: ``loss = term_seg_BCE + term_seg_Dice``; ``--trans_encoding word_embedding``,
``--word_embedding ./pretrained_weights/txt_encoding.pth``):

    text code     t_c = ReLU(W_t · e_c + b_t)                     e_c ∈ R^E → R^256   (text_to_vision)
    image code    f   = W_f · AvgPool(ReLU(GN(bottleneck))) + b_f  R^{C_b} → R^256   (GAP)
    head params   ω_c = W_ω · [f, t_c] + b_ω                       R^512 → R^153      (controller)
    task logit    z_c = head(ω_c, W_p · ReLU(GN(decoder features)))                   (precls_conv, F → 8)
                  head: three dynamic 1×1×1 convolutions 8 → 8 → 8 → 1, ReLU between

Loss, over the (sample b, class c) pairs whose class the sample's dataset annotates (the
official ``TEMPLATE``), each pair weighing the same:

    L = mean_{(b,c)} BCE(z_c, y_c)  +  mean_{(b,c)} mean_x [1 − 2 Σ_{y,z} σ(z_c)·y_c / (Σ_{y,z} σ(z_c) + Σ_{y,z} y_c + 1)]

BCE is the voxel mean (``BCEWithLogitsLoss``). The Dice is the official ``BinaryDiceLoss``
as ``DiceLoss`` calls it, on one ``[X, Y, Z]`` volume: it flattens to ``[X, Y·Z]`` and so
computes one Dice per slice along the first spatial axis (x, sagittal, in the RAS volumes both
pipelines use) and averages the slices; the smoothing 1 is in the denominator only, so a
slice without the organ contributes a constant 1
(:func:`tctseg.losses.binary_task.official_task_losses`). (The stored
revision 937725b of ``utils/loss.py`` flattens with ``view(-1)`` and then sums over dim 1,
which cannot run; the runnable revision, followed here, flattens with ``view(shape[0], -1)``.)

Inference: the backbone once, the dynamic head once per class (``head_passes``); each class's
mask is ``σ(z_c) > ½`` on its own (``test.py``: ``threshold_organ`` with 0.5 for every organ),
which is how ``tctseg run``/``compare`` score it (``task_prompted``, see
:mod:`tctseg.methods.dodnet`).

Embeddings ``e_c`` (:mod:`tctseg.methods.text_embeddings`): the authors' own CLIP text
embeddings (``txt_encoding.pth``, E = 512), read at run time from
``${TCTSEG_SHARED:-../shared}/data/clip-text-embeddings`` when that folder is there (the
rows of this config's classes are picked in memory); else — said once in the log — the
packaged MiniLM model (E = 384); or a file the user gives (``method.options.text_embeddings``)
or ``method.options.text_model: clip|minilm``. They are kept frozen as a buffer and saved in
the checkpoint, so a checkpoint loads with its own embeddings whatever source this machine has.
Beside them the checkpoint records where they came from (``text_embeddings_source``, the
module's extra state: ``model["_extra_state"]["text_embeddings"]``, see
:func:`~tctseg.methods.text_embeddings.source_record`), and a loaded checkpoint brings its
record with its embeddings; one written before the record existed says ``not recorded``.

What still differs from the official code:

- Backbone: the shared 3D U-Net (paper App. D) instead of Swin UNETR / their UNet3D / DiNTS
  and no pre-trained weights; the image code reads its bottleneck (C_b = width·2^(depth−1))
  and the head its last decoder features (F = width), where the official reads the deepest
  features (768 or 512 channels) and the last decoder stage (48 or 64).
- GroupNorm has 16 groups as in the official code, fewer when the channels are not a
  multiple of 16 (a CPU-sized width 8 gets 8 groups: :func:`~tctseg.methods.task_prompted.group_norm`).
- Only this config's N classes are prompted; the official model runs all 32 of its classes
  and the loss keeps the annotated ones (the other 32 − N heads only cost time).
- The controller is a linear layer (the official 1×1×1 convolution on a 1×1×1 map is the
  same map); its output is read as weight, bias, weight, bias, … per layer where the official
  reads all weights then all biases — a fixed permutation of the controller's rows, the same
  model.
- The official test script also keeps organs' largest components (``organ_post_process``);
  here that is ``inference.largest_component`` / ``--lcc``, applied to each task's mask.
- The official ``test.py`` blends the windows' logits (MONAI's ``sliding_window_inference``
  on the model) and then takes σ; here each window's σ is blended (as DoDNet's evaluation
  does), so a mask can differ only where overlapping windows disagree.
- Optimiser, schedule, patch sampling and augmentation are the shared training loop's
  (the official: AdamW 1e-4, weight decay 1e-5, warm-up cosine, 96³ patches).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tctseg.losses.binary_task import official_task_losses
from tctseg.methods.base import LossOutput, build_backbone
from tctseg.methods.options import read_options
from tctseg.methods.registry import register_method
from tctseg.methods.task_prompted import (
    ControlledDynamicHeads,
    DynamicHeadOptions,
    TaskPromptedMethod,
    backbone_forward,
    group_norm,
)
from tctseg.methods.text_embeddings import source_record, text_embeddings_for, values_sha256
from tctseg.network import UNet3D

VISION_CHANNELS = 256  # the official width of the image and text codes
EXTRA_STATE_KEY = "_extra_state"  # torch's state-dict key of get_extra_state()


@register_method
class CLIPDrivenMethod(TaskPromptedMethod):
    name = "clip"
    description = "CLIP-Driven: organ text embeddings -> controller -> dynamic binary heads (Liu et al. 2023)"
    # a checkpoint's embeddings may be wider or narrower than this machine's source gives
    sized_by_checkpoint = ("text_embeddings", "text_to_vision.weight")

    def __init__(
        self,
        backbone: UNet3D,
        text_embeddings: torch.Tensor,
        head_channels: int = 8,
        vision_channels: int = VISION_CHANNELS,
        text_embeddings_source: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.num_classes = text_embeddings.shape[0]
        # where the embeddings came from (text_embeddings.source_record); saved in checkpoints
        self.text_embeddings_source = dict(text_embeddings_source or source_record(text_embeddings, "given", "the caller"))
        self.network = backbone
        bottleneck_channels = backbone.bottleneck_channels
        self.register_buffer("text_embeddings", text_embeddings.float().clone())
        self.text_to_vision = nn.Linear(text_embeddings.shape[1], vision_channels)
        image_code = nn.Sequential(  # the official GAP: norm, ReLU, pool, then the 256-channel projection
            group_norm(bottleneck_channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool3d(1),
            nn.Conv3d(bottleneck_channels, vision_channels, 1),
        )
        self.heads = ControlledDynamicHeads(
            backbone.out_channels, vision_channels, vision_channels, head_channels,
            image_encoder=image_code, feature_norm=True,
        )

    @classmethod
    def from_config(cls, config) -> CLIPDrivenMethod:
        options = config.method.options
        embeddings = text_embeddings_for(config.classes, options)
        head = read_options(DynamicHeadOptions, options)
        return cls(build_backbone(config), embeddings.vectors, head.head_channels,
                   text_embeddings_source=embeddings.source)

    def task_logits(self, image: torch.Tensor, batch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        bottleneck, features = backbone_forward(self.network, image)
        codes = F.relu(self.text_to_vision(self.text_embeddings))  # [N, 256]
        return self.heads(bottleneck, features, codes)

    def forward(self, batch: dict[str, torch.Tensor], epoch: int) -> LossOutput:
        logits = self.task_logits(batch["image"], batch)
        bce, dice = official_task_losses(logits, batch["labels"], batch["annotated"])
        return LossOutput(bce + dice, {"main": dice.detach(), "bce": bce.detach()})

    def get_extra_state(self) -> dict[str, Any]:
        """Saved in the state dict (``_extra_state``): the record of the embeddings' source."""
        return {"text_embeddings": dict(self.text_embeddings_source)}

    def set_extra_state(self, state: Any) -> None:
        record = state.get("text_embeddings") if isinstance(state, dict) else None
        if isinstance(record, dict):
            self.text_embeddings_source = dict(record)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        stored = state_dict.get(prefix + "text_embeddings")
        if prefix + EXTRA_STATE_KEY not in state_dict:
            # a checkpoint from before the source was recorded: its embeddings come without a record
            record = {"source": "not recorded", "chosen_by": "not recorded"}
            if isinstance(stored, torch.Tensor) and stored.ndim == 2:
                record.update(dim=int(stored.shape[1]), values_sha256=values_sha256(stored))
            state_dict[prefix + EXTRA_STATE_KEY] = {"text_embeddings": record}
        # the checkpoint's embeddings win: rebuild the text layer for their width (E) if this
        # machine's source gave another (e.g. MiniLM where the run had the official CLIP file)
        current = self.text_embeddings.shape
        if isinstance(stored, torch.Tensor) and stored.ndim == 2 and stored.shape[0] == current[0] != 0 and stored.shape[1] != current[1]:
            self.text_embeddings = torch.empty_like(stored, dtype=torch.float32, device=self.text_embeddings.device)
            old = self.text_to_vision
            self.text_to_vision = nn.Linear(stored.shape[1], old.out_features).to(old.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
