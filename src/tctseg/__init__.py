"""tctseg — Task Consistency Training for versatile 3D organ segmentation
from several partially labeled datasets.

Public building blocks:

- :mod:`tctseg.network` — the 3D U-Net backbone, main and auxiliary heads;
- :mod:`tctseg.losses` — marginal Dice, auxiliary Dice, task consistency,
  uncertainty weighting, ramp-up (paper Eq. 1–7);
- :mod:`tctseg.methods` — TCT and its baselines as small objects that turn a
  batch into a loss;
- :mod:`tctseg.config` — typed configuration loaded from YAML.
"""

__version__ = "0.1.0"
