"""Preprocessing (paper §4.1): RAS reorientation, intensity normalisation, resampling — forward
and inverse geometry (:mod:`.geometry`) — and the prepared cache (:mod:`.cache`)."""

from tctseg.preprocessing.geometry import PreparedGeometry, plan_geometry, to_original, to_prepared
from tctseg.preprocessing.intensity import normalise, normalise_ct, normalise_mr

__all__ = ["PreparedGeometry", "plan_geometry", "to_original", "to_prepared", "normalise", "normalise_ct", "normalise_mr"]
