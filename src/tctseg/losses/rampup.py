"""Sigmoid-shaped ramp-up of the consistency weight: w(t) = λ_max · sigmoid_rampup(t, length)."""

from __future__ import annotations

import math


def sigmoid_rampup(t: float, length: float) -> float:
    """``exp(−5·(1 − clip(t/length, 0, 1))²)``, and 1.0 when ``length`` is 0 (SPEC "Ramp-up").

    Rises from e⁻⁵ ≈ 0.0067 at t = 0 to 1 at t = length and stays there.
    """
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(t / length, 0.0), 1.0)
    return math.exp(-5.0 * phase * phase)
