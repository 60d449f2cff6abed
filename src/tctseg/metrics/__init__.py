"""Metrics, below every stage that uses them: :mod:`tctseg.metrics.masks` (DSC and HD95 of
binary masks, with the empty-mask convention), used by training's validation, predict's QC and
the evaluation tables; :mod:`tctseg.metrics.ranking` (Spearman's ρ, the AUROC and the AURC of
a quality signal against DSC, the QC validation). Nothing is imported here, so that the
ranking does not load torch and MONAI."""
