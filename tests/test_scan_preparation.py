"""One path from a scan to the network's input (issue 29): the prepared cache (training) and
predict prepare a scan by the same function with the same settings record, so the real CHAOS
MR and the real CT come out identical both ways, and the checkpoint stores the cache's record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tctseg.config import PreprocessingConfig, config_from_dict
from tctseg.data.conversion.common import LabelMapping, SourceCase
from tctseg.data.io import load_volume
from tctseg.inference.predict import prepare_image
from tctseg.preprocessing.cache import prepare_case, settings_of
from tctseg.preprocessing.scan import prepared_settings

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCANS = [
    ("MR", DATA / "chaos-t2" / "imagesTr" / "chaos_01_0000.nii.gz", {"spacing": [3.0, 3.0, 6.0]}),
    ("CT", DATA / "ct-example" / "ct.nii.gz", {"spacing": [1.5, 1.5, 3.0], "ct_clip": [-200.0, 300.0]}),
]


@pytest.mark.parametrize("modality, path, preprocessing", SCANS, ids=["chaos_mr", "ct"])
def test_the_cache_and_predict_prepare_a_real_scan_identically(tmp_path, modality, path, preprocessing):
    if not path.exists():
        pytest.skip(f"{path} is not here")
    config = config_from_dict({"classes": ["liver"], "datasets": [], "preprocessing": preprocessing})
    mapping = LabelMapping({1: 1}, ("liver",), "test")
    case = SourceCase("real", "case", path, None, modality, ("liver",), mapping=mapping)
    case_dir = tmp_path / "case"
    prepare_case(case, case_dir, settings_of(config.preprocessing), ["liver"])
    cached = np.load(case_dir / "image.npy")
    predicted, geometry = prepare_image(load_volume(path), modality, config)
    assert cached.dtype == predicted.dtype == np.float32
    assert cached.shape == predicted.shape == tuple(geometry.prepared_shape)
    assert np.array_equal(cached, predicted)
    assert 0.0 < float(cached.std())  # a real image, not an empty one that would match anything
    record = json.loads((case_dir / "meta.json").read_text())["settings"]
    assert {k: v for k, v in record.items() if k != "cache_format"} == prepared_settings(config.preprocessing)


def test_the_checkpoint_stores_the_caches_settings_record():
    from tctseg.checkpoint import preprocessing_settings

    config = config_from_dict({"classes": ["liver"], "datasets": [], "preprocessing": {"spacing": [2, 2, 4], "workers": 7}})
    assert preprocessing_settings(config) == prepared_settings(config.preprocessing)
    assert preprocessing_settings(config) == {k: v for k, v in settings_of(config.preprocessing).items() if k != "cache_format"}
    # the number of worker processes decides nothing in the prepared arrays
    assert prepared_settings(PreprocessingConfig(workers=1)) == prepared_settings(PreprocessingConfig(workers=8))
