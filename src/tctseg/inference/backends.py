"""The engine that runs the network over a scan's windows: eager PyTorch, ONNX Runtime or OpenVINO.

- ``torch`` (the default, always there): the method's own forward, eager, fp32, channels-last.
- ``onnxruntime``: the network exported to ONNX once per checkpoint and run by ONNX Runtime's
  CPU provider (graph optimisations on, as many threads as torch uses).
- ``openvino``: the same ONNX file compiled by OpenVINO for the CPU, at fp32 (OpenVINO would
  pick bf16 on CPUs with AMX; fp32 keeps the label maps those of PyTorch).
- ``openvino-bf16``: OpenVINO at bf16 where the CPU computes it (AMX or AVX512-BF16 Xeons:
  several times faster; elsewhere OpenVINO runs fp32). Its label maps are not PyTorch's to
  the voxel: BENCHMARKS.md has their agreement on trained models.

The two others are optional (``pip install ".[fast-cpu]"``) and CPU-only; asking for one
that is not installed, on a GPU, or for a call it cannot export (Hermes' per-dataset task
tokens) is a one-line :class:`~tctseg.errors.ConfigError`.

What is exported is exactly what the sliding window calls: ``predict_logits`` (the main head,
``[B, 1, *P]`` → ``[B, N+1, *P]``), ``predict_with_aux`` (with the auxiliary heads, for
``--qc``) or ``task_logits`` (task-prompted methods), in eval mode, with a free batch axis.
It is traced on a channels-first window, so instance norms are exported as ONNX's own
``InstanceNormalization`` (:func:`tctseg.network.norm.instance_norm` falls back to
``F.instance_norm`` there). A checkpoint's exports are cached by the checkpoint file's
sha256 in ``$TCTSEG_EXPORT_CACHE`` (default ``~/.cache/tctseg/exported``): the export (tens of
seconds) is paid once per checkpoint, entry point and patch size; a model given in memory is
exported into a temporary folder for the call.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from tctseg.errors import ConfigError
from tctseg.files.outputs import write_atomically
from tctseg.settings import INFERENCE_BACKENDS

# the method entry points the sliding window calls, and the names of their outputs
ENTRY_OUTPUTS = {
    "predict_logits": ("logits",),
    "predict_with_aux": ("logits", "aux_logits"),
    "task_logits": ("task_logits",),
}
# the Python package each optional backend needs
BACKEND_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "openvino-bf16": "openvino"}
INSTALL_HINT = 'pip install ".[fast-cpu]"'


def backend_available(name: str) -> bool:
    """True when ``name``'s package can be imported (``torch`` always)."""
    if name == "torch":
        return True
    import importlib.util

    return importlib.util.find_spec(BACKEND_PACKAGES[name]) is not None and importlib.util.find_spec("onnx") is not None


def available_backends() -> list[str]:
    return [b for b in INFERENCE_BACKENDS if backend_available(b)]


def check_backend(name: str, device: str) -> None:
    """Refuse (ConfigError) an unknown backend, a missing optional one, or one on a GPU."""
    if name not in INFERENCE_BACKENDS:
        raise ConfigError(f"backend {name!r}: choose one of {', '.join(INFERENCE_BACKENDS)}")
    if name != "torch" and str(device).startswith("cuda"):
        raise ConfigError(f"backend {name}: runs on the CPU only; use --backend torch with --device cuda")
    if not backend_available(name):
        raise ConfigError(f"backend {name}: not installed; {INSTALL_HINT} installs it (or use --backend torch)")


def export_cache() -> Path:
    """Where exported networks are kept: ``$TCTSEG_EXPORT_CACHE`` or ``~/.cache/tctseg/exported``."""
    given = os.environ.get("TCTSEG_EXPORT_CACHE")
    if given:
        return Path(given).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tctseg" / "exported"


class _Entry(torch.nn.Module):
    """One entry point of a method as a module's forward (what the exporter traces)."""

    def __init__(self, method: torch.nn.Module, entry: str):
        super().__init__()
        self.method = method
        self.entry = entry

    def forward(self, window: torch.Tensor):
        return getattr(self.method, self.entry)(window)


def export_onnx(method: torch.nn.Module, entry: str, patch_size: Sequence[int], path: Path) -> Path:
    """Write ``method.<entry>`` as an ONNX graph with a free batch axis to ``path`` (atomically).

    The method is traced in eval mode on the CPU in channels-first layout; its own device,
    mode and memory format are restored afterwards.
    """
    if entry not in ENTRY_OUTPUTS:
        raise ValueError(f"entry must be one of {sorted(ENTRY_OUTPUTS)}, got {entry!r}")
    was_training = method.training
    first = next(method.parameters())
    device, channels_last = first.device, first.dim() == 5 and first.is_contiguous(memory_format=torch.channels_last_3d) and not first.is_contiguous()
    method.eval().to("cpu", memory_format=torch.contiguous_format)
    window = torch.zeros((1, 1, *(int(p) for p in patch_size)), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=1024)

    def write(tmp: Path) -> None:
        import contextlib
        import io
        import logging
        import warnings

        # the exporter narrates every phase on stdout and logs/warns about what it skips
        # (torchvision's operators, ...): keep predict's output to its own lines
        exporter_log = logging.getLogger("torch.onnx")
        level = exporter_log.level
        exporter_log.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Entry(method, entry).eval(), (window,), str(tmp), input_names=["window"],
                output_names=list(ENTRY_OUTPUTS[entry]), dynamic_shapes={"window": {0: batch}},
                dynamo=True, external_data=False,
            )
        exporter_log.setLevel(level)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, write, "the exported network")
    finally:
        method.to(device)
        if channels_last:
            method.to(memory_format=torch.channels_last_3d)
        method.train(was_training)
    return path


class ExportedNetwork:
    """A callable like ``method.<entry>``: windows ``[B, 1, *P]`` float32 → the entry's
    outputs as float32 tensors (one tensor, or a tuple for ``predict_with_aux``), run by
    ONNX Runtime or OpenVINO from an ONNX file."""

    def __init__(self, onnx_path: Path, backend: str, entry: str, threads: int | None = None):
        self.backend = backend
        self.entry = entry
        self.path = Path(onnx_path)
        threads = int(threads or torch.get_num_threads())
        if backend == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            self._run: Callable[[np.ndarray], list[np.ndarray]] = lambda x: session.run(None, {name: x})
        elif backend in ("openvino", "openvino-bf16"):
            import openvino as ov

            precision = "bf16" if backend == "openvino-bf16" else "f32"
            compiled = ov.Core().compile_model(
                str(self.path), "CPU",
                {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"},
            )
            self._run = lambda x: [compiled(x)[out] for out in compiled.outputs]
        else:
            raise ValueError(f"backend must be onnxruntime, openvino or openvino-bf16, got {backend!r}")

    def __call__(self, window: torch.Tensor):
        x = np.ascontiguousarray(window.detach().to("cpu", torch.float32).numpy())
        outputs = [torch.from_numpy(np.asarray(o, dtype=np.float32)) for o in self._run(x)]
        return tuple(outputs) if len(outputs) > 1 else outputs[0]


def network_for(
    method: torch.nn.Module,
    entry: str,
    backend: str,
    patch_size: Sequence[int],
    *,
    checkpoint_sha256: str | None = None,
    scratch: Path | None = None,
) -> Callable[[torch.Tensor], object]:
    """What the sliding window calls for ``method.<entry>`` under ``backend``.

    ``torch``: the bound method itself. Otherwise an :class:`ExportedNetwork` over the ONNX
    export cached for ``checkpoint_sha256`` (exported on first use), or, for a model without
    a checkpoint, exported into ``scratch`` (a temporary folder when None).
    """
    if backend == "torch":
        return getattr(method, entry)
    patch = "x".join(str(int(p)) for p in patch_size)
    if checkpoint_sha256:
        path = export_cache() / f"{checkpoint_sha256[:24]}-{entry}-{patch}-torch{torch.__version__.split('+')[0]}.onnx"
    else:
        folder = Path(scratch) if scratch is not None else Path(tempfile.mkdtemp(prefix="tctseg-export-"))
        path = folder / f"model-{id(method):x}-{entry}-{patch}.onnx"
    if not path.exists():
        export_onnx(method, entry, patch_size, path)
    return ExportedNetwork(path, backend, entry)
