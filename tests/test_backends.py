"""predict --backend: ONNX Runtime and OpenVINO give eager PyTorch's label maps on the real CT.

A backend has to agree with eager PyTorch per class (DSC ≥ 0.99, issue 30) and in its
probabilities, on the real CT of ../shared/data/ct-example. Each backend is tested where it
is installed (``pip install ".[fast-cpu]"``, which ``make install`` includes) and skipped
where not.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tctseg.config import config_from_dict
from tctseg.errors import ConfigError
from tctseg.inference import predict_cases
from tctseg.inference import backends
from tctseg.inference.backends import ExportedNetwork, check_backend, network_for
from tctseg.metrics.masks import dice
from tctseg.methods import build_method

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct-example"
CT = DATA / "ct.nii.gz"
needs_data = pytest.mark.skipif(not CT.is_file(), reason=f"real CT example not found at {DATA}")
OPTIONAL = ("onnxruntime", "openvino")
CLASSES = ["liver", "spleen", "left_kidney", "right_kidney"]
PATCH = (32, 32, 16)


def _config(method: str = "tct"):
    return config_from_dict({
        "classes": CLASSES,
        "datasets": [{"name": "ct", "format": "nnunet", "path": "unused", "modality": "CT"}],
        "network": {"width": 4, "depth": 3, "norm": "instance", "channels_last": True},
        "method": {"name": method},
        "preprocessing": {"spacing": [6.0, 6.0, 6.0]},
        "train": {"patch_size": list(PATCH), "seed": 0},
        "inference": {"overlap": 0.25, "sw_batch_size": 2},
    })


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A TCT U-Net (width 4) with seeded random weights. Its label maps on the real CT hold
    every class, with decision boundaries everywhere: a harder test of agreement than a
    trained model's confident margins (those: BENCHMARKS.md, on the CHAOS models)."""
    torch.manual_seed(0)
    config = _config()
    method = build_method(config)
    path = tmp_path_factory.mktemp("model") / "checkpoint_best.pt"
    torch.save({"model": method.state_dict(), "config": config.to_dict(), "classes": config.classes, "epoch": 1}, path)
    return path


def test_unknown_missing_and_gpu_backends_are_one_line_errors(monkeypatch):
    with pytest.raises(ConfigError, match="backend 'tensorrt': choose one of torch, onnxruntime, openvino, openvino-bf16"):
        check_backend("tensorrt", "cpu")
    with pytest.raises(ConfigError, match="backend onnxruntime: runs on the CPU only"):
        check_backend("onnxruntime", "cuda")
    monkeypatch.setattr(backends, "backend_available", lambda name: name == "torch")
    with pytest.raises(ConfigError, match=r"backend openvino: not installed; pip install \"\.\[fast-cpu\]\""):
        check_backend("openvino", "cpu")
    check_backend("torch", "cpu")  # always there


@needs_data
@pytest.mark.parametrize("backend", OPTIONAL)
def test_a_backend_predicts_the_real_ct_as_eager_pytorch_does(checkpoint, backend, tmp_path, monkeypatch):
    if not backends.backend_available(backend):
        pytest.skip(f"{backend} is not installed (pip install '.[fast-cpu]')")
    monkeypatch.setenv("TCTSEG_EXPORT_CACHE", str(tmp_path / "exported"))
    eager = predict_cases(checkpoint, [CT], tmp_path / "torch", progress=False, save_probabilities=True)
    fast = predict_cases(checkpoint, [CT], tmp_path / backend, progress=False, save_probabilities=True,
                         backend=backend)
    assert eager[0].status == fast[0].status == "written"
    a = np.asarray(nib.load(eager[0].prediction).dataobj)
    b = np.asarray(nib.load(fast[0].prediction).dataobj)
    present = [c for c in range(1, len(CLASSES) + 1) if (a == c).any()]
    assert len(present) == len(CLASSES)  # every class somewhere: boundaries to disagree on
    for c in present:
        assert dice(a == c, b == c) >= 0.99, (backend, CLASSES[c - 1], dice(a == c, b == c))
    # the probabilities (uint8, 1/255 steps) differ by at most a rounding step
    pa = np.asarray(nib.load(eager[0].probabilities).dataobj).astype(int)
    pb = np.asarray(nib.load(fast[0].probabilities).dataobj).astype(int)
    assert np.abs(pa - pb).max() <= 1
    # the index says what ran the network; the export was cached and is reused
    index = json.loads((tmp_path / backend / "index.json").read_text(encoding="utf-8"))
    assert index[0]["backend"] == backend
    assert "backend" in json.loads((tmp_path / "torch" / "index.json").read_text(encoding="utf-8"))[0]
    exported = sorted((tmp_path / "exported").glob("*.onnx"))
    assert len(exported) == 1 and "predict_logits-32x32x16" in exported[0].name
    stamp = exported[0].stat().st_mtime_ns
    predict_cases(checkpoint, [CT], tmp_path / "again", progress=False, backend=backend)
    assert exported[0].stat().st_mtime_ns == stamp


def test_openvino_bf16_computes_the_same_network_to_bf16_precision(tmp_path):
    """bf16 is not PyTorch to the voxel (its agreement on trained models: BENCHMARKS.md); its
    logits are the network's to within bf16's precision (8 mantissa bits, ~0.4 % per
    operation, compounding over the layers): small on average against their spread, and
    correlated with them almost perfectly."""
    if not backends.backend_available("openvino-bf16"):
        pytest.skip("openvino is not installed (pip install '.[fast-cpu]')")
    torch.manual_seed(2)
    method = build_method(_config()).eval()
    network = network_for(method, "predict_logits", "openvino-bf16", PATCH, scratch=tmp_path)
    windows = torch.rand(2, 1, *PATCH)
    with torch.inference_mode():
        reference = method.predict_logits(windows)
    got = network(windows)
    assert got.shape == reference.shape
    assert float((got - reference).abs().mean()) <= 0.02 * float(reference.std())
    assert float(torch.corrcoef(torch.stack([got.flatten(), reference.flatten()]))[0, 1]) >= 0.999


@pytest.mark.parametrize("backend", OPTIONAL)
def test_the_auxiliary_heads_export_as_the_method_computes_them(backend, tmp_path):
    """--qc runs TCT's predict_with_aux: the exported one returns both outputs, with a free batch."""
    if not backends.backend_available(backend):
        pytest.skip(f"{backend} is not installed (pip install '.[fast-cpu]')")
    torch.manual_seed(1)
    method = build_method(_config()).eval().to(memory_format=torch.channels_last_3d)
    network = network_for(method, "predict_with_aux", backend, PATCH, scratch=tmp_path)
    assert isinstance(network, ExportedNetwork)
    windows = torch.rand(3, 1, *PATCH)
    with torch.inference_mode():
        main, aux = method.predict_with_aux(windows)
    got_main, got_aux = network(windows)
    assert got_main.shape == main.shape and got_aux.shape == aux.shape
    assert torch.allclose(got_main, main, atol=1e-3) and torch.allclose(got_aux, aux, atol=1e-3)
    # the method is left as it was: channels-last, eval
    assert next(method.parameters()).is_contiguous(memory_format=torch.channels_last_3d)
