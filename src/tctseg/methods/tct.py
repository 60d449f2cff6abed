"""TCT — Task Consistency Training (this paper, §3): main head + N auxiliary task heads.

``L = exp(−s1)·L_main + exp(−s2)·L_aux + ½(s1 + s2) + w(t)·L_con`` (Eq. 7, UAUWL), with
the marginal Dice ``L_main`` (Eq. 1–2), auxiliary Dice ``L_aux`` (Eq. 3–4), the filtered
task consistency ``L_con`` (Eq. 5–6) and ``w(t) = λ_max·sigmoid_rampup(epoch, R)``.

Ablation switches (``config.method``): ``consistency`` on/off (Tab. 5); ``threshold``
median / task_mean / batch_mean / float / null (Tab. 7) and ``empty_classes`` keep / drop /
as_one (what absent classes do in the filter); ``filter`` iou / confidence (Tab. 8: the
entropy-confidence strategy instead of the IoU filter);
``weighting`` uauwl / uwl / fixed (Tab. 9); ``lambda_max`` and ``rampup_fraction``;
``detach_aux``.
"""

from __future__ import annotations

import torch

from tctseg.losses import (
    ConsistencyTerms,
    UncertaintyWeightedLoss,
    auxiliary_dice_terms,
    consistency_terms,
    marginal_dice_loss,
    sigmoid_rampup,
)
from tctseg.methods.base import LossOutput, Method, build_network
from tctseg.methods.registry import register_method
from tctseg.settings import WEIGHTINGS


@register_method
class TCTMethod(Method):
    name = "tct"
    description = "TCT: main head + auxiliary task heads with filtered task consistency (this paper)"

    def __init__(
        self,
        network: torch.nn.Module,
        num_classes: int,
        *,
        consistency: bool = True,
        threshold: str | float | None = "median",
        empty: str = "keep",
        filter: str = "iou",
        confidence_threshold: float = 0.5,
        weighting: str = "uauwl",
        lambda_max: float = 1.0,
        rampup_epochs: float = 80.0,
        detach_aux: bool = True,
        class_names: list[str] | None = None,
    ):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        self.network = network
        self.num_classes = num_classes
        self.consistency = consistency
        self.threshold = threshold
        self.empty = empty
        self.class_names = list(class_names) if class_names is not None else [str(j) for j in range(1, num_classes + 1)]
        self.filter = filter
        self.confidence_threshold = confidence_threshold
        self.weighting = weighting
        self.lambda_max = lambda_max
        self.rampup_epochs = rampup_epochs
        self.detach_aux = detach_aux
        terms = {"uauwl": 2, "uwl": 1 + num_classes, "fixed": 0}[weighting]
        self.uncertainty = UncertaintyWeightedLoss(terms) if terms else None

    @classmethod
    def from_config(cls, config) -> TCTMethod:
        m = config.method
        return cls(
            build_network(config, aux_heads=True),
            config.num_classes,
            consistency=m.consistency,
            threshold=m.threshold,
            empty=m.empty_classes,
            filter=m.filter,
            confidence_threshold=m.confidence_threshold,
            weighting=m.weighting,
            lambda_max=m.lambda_max,
            rampup_epochs=m.rampup_fraction * config.train.epochs,
            detach_aux=m.detach_aux,
            class_names=config.classes,
        )

    def consistency_weight(self, epoch: float) -> float:
        """w(t) = λ_max · sigmoid_rampup(epoch, rampup_epochs)."""
        return self.lambda_max * sigmoid_rampup(epoch, self.rampup_epochs)

    def forward(self, batch: dict[str, torch.Tensor], epoch: int) -> LossOutput:
        labels, annotated = batch["labels"], batch["annotated"]
        out = self.network(batch["image"], aux=True)
        # losses in float32 even under mixed precision
        main_probs = torch.softmax(out.main_logits.float(), dim=1)
        aux_probs = torch.softmax(out.aux_logits.float(), dim=2)

        loss_main = marginal_dice_loss(main_probs, labels, annotated)
        aux_terms = auxiliary_dice_terms(aux_probs, labels, annotated)  # [B, N]
        loss_aux = aux_terms.sum(1).mean()
        parts: dict[str, torch.Tensor] = {"main": loss_main.detach(), "aux": loss_aux.detach()}

        if self.weighting == "uauwl":
            total = self.uncertainty([loss_main, loss_aux])
        elif self.weighting == "uwl":
            total = self.uncertainty(torch.cat([loss_main.view(1), aux_terms.mean(0)]))
        else:
            total = loss_main + loss_aux
        if self.uncertainty is not None:
            for k, s in enumerate(self.uncertainty.log_vars.detach()):
                parts[f"log_var_{k + 1}"] = s

        if self.consistency:
            weight = self.consistency_weight(epoch)
            con = consistency_terms(
                main_probs,
                aux_probs,
                self.threshold,
                self.detach_aux,
                self.empty,
                filter=self.filter,
                confidence_threshold=self.confidence_threshold,
            )
            loss_con = con.loss
            total = total + weight * loss_con
            parts["consistency"] = loss_con.detach()
            parts["w"] = torch.tensor(weight, device=loss_con.device)
            parts["kept_fraction"] = con.keep.float().mean()
            if con.confident is not None:
                # the confidence filter's own kept fraction: of the voxels, per class
                for j, name in enumerate(self.class_names):
                    parts[f"filter_confident_{name}:num"] = con.confident[:, j].sum()
                    parts[f"filter_confident_{name}:den"] = torch.tensor(float(con.confident.shape[0]), device=con.confident.device)
            parts.update(filter_statistics(con, self.class_names))
        return LossOutput(total, parts)


def filter_statistics(con: ConsistencyTerms, class_names: list[str]) -> dict[str, torch.Tensor]:
    """What the consistency filter did in one step, as ratio parts (``name:num``, ``name:den``;
    the trainer sums both over an epoch and logs ``name`` = Σnum / Σden):

    ``filter_absent``: the fraction of (sample, class) pairs absent from both heads' masks;
    ``filter_kept_present`` / ``filter_iou_present``: among present pairs, the kept fraction
    and the mean IoU; per class c ``filter_kept_<c>`` (kept fraction of its present pairs)
    and ``filter_term_<c>`` (its mean consistency term over the samples, kept or not).
    """
    present = con.present.float()  # [B, N]
    kept_present = (con.keep & con.present).float()
    iou_present = torch.nan_to_num(con.iou, nan=0.0) * present
    ones = torch.ones_like(present)
    parts = {
        "filter_absent:num": (1.0 - present).sum(),
        "filter_absent:den": ones.sum(),
        "filter_kept_present:num": kept_present.sum(),
        "filter_kept_present:den": present.sum(),
        "filter_iou_present:num": iou_present.sum(),
        "filter_iou_present:den": present.sum(),
    }
    terms = con.terms.detach()
    for j, name in enumerate(class_names):
        parts[f"filter_kept_{name}:num"] = kept_present[:, j].sum()
        parts[f"filter_kept_{name}:den"] = present[:, j].sum()
        parts[f"filter_term_{name}:num"] = terms[:, j].sum()
        parts[f"filter_term_{name}:den"] = ones[:, j].sum()
    return parts
