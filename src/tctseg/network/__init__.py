"""Networks: the 3D U-Net backbone of paper Tab. 6 and the heads that sit on it."""

from tctseg.network.heads import AuxiliaryTaskHeads, SegmentationHead
from tctseg.network.segmentation import NetworkOutput, SegmentationNetwork, count_parameters
from tctseg.network.unet import UNet3D

__all__ = [
    "AuxiliaryTaskHeads",
    "NetworkOutput",
    "SegmentationHead",
    "SegmentationNetwork",
    "UNet3D",
    "count_parameters",
]
