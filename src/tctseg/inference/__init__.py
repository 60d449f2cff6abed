"""Inference: sliding-window prediction of whole scans, written back into each scan's own geometry.

    probs = sliding_window_probabilities(method, image, patch_size)   # [N+1, X, Y, Z]
    results = predict_cases("run/checkpoint_best.pt", ["scans/"], "predictions/")
"""

from tctseg.inference.export import PredictionResult
from tctseg.inference.inputs import PredictionInput, find_cases
from tctseg.inference.postprocess import keep_largest_component
from tctseg.inference.predict import predict_cases, training_modality
from tctseg.inference.sliding_window import sliding_window_probabilities

__all__ = [
    "PredictionInput",
    "PredictionResult",
    "find_cases",
    "keep_largest_component",
    "predict_cases",
    "sliding_window_probabilities",
    "training_modality",
]
