"""Sliding-window class probabilities of a whole prepared volume (MONAI, Gaussian blending).

Choices, each for a reason:

- Softmax is taken per window, BEFORE blending: overlapping windows are averaged as
  probabilities, which are bounded, so one window's over-confident edge logits cannot
  dominate a voxel, and the blended result is already a distribution (sums to 1).
- Task-prompted methods (``method.task_prompted``: one sigmoid per class) are read with
  ``task_probabilities=True``: each task's σ is taken per window and blended the same way,
  giving N independent maps (no background channel; they need not sum to 1). ``tasks``
  (the global class ids the scan's dataset annotates, as ``run``/``compare`` know them for a
  test set) asks only those tasks (``method.task_logits_for``; Hermes' task tokens); without
  it every task, as for a new scan.
- Flip test-time augmentation runs inside each window over all 8 combinations of flips
  along the three spatial axes (nnU-Net's mirroring): every window is predicted 8 times,
  flipped back and averaged, then blended once. It costs 8× the plain pass.
- Volumes smaller than the patch are padded with 0 by MONAI (the minimum of the [0, 1]
  intensity range: air for CT) and the result is cropped back to the volume.
- The stitched output lives on the CPU whatever the model's device, so a 512×512×100 scan
  costs host memory, not accelerator memory; windows run on ``device``.
- Progress is MONAI's own bar, or (``on_windows``) a count of windows handed to the caller,
  so that one bar can count the windows of several networks (an ensemble's members);
  :func:`window_count` says how many windows a volume has.
"""

from __future__ import annotations

import functools
import itertools
from typing import Callable, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

# every subset of the spatial axes of a [B, C, X, Y, Z] tensor: (), (2,), (3,), ..., (2, 3, 4)
FLIP_COMBINATIONS: tuple[tuple[int, ...], ...] = tuple(
    axes for r in range(4) for axes in itertools.combinations((2, 3, 4), r)
)


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    # MetaTensors slow the network down by ~38% here (MEASURED.md); strip the metadata
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


def window_probabilities(
    predict_logits: Callable[[torch.Tensor], torch.Tensor],
    *,
    tta_flip: bool = False,
    channels_last: bool = False,
    autocast_device: str | None = None,
    aux_heads: bool = False,
    sigmoid: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A MONAI predictor: windows ``[B, 1, *P]`` → softmax probabilities ``[B, N+1, *P]`` float32.

    With ``sigmoid``, ``predict_logits`` returns N task logits ``[B, N, *P]`` and the predictor
    their sigmoids ``[B, N, *P]`` (task-prompted methods).

    With ``aux_heads``, ``predict_logits`` returns ``(main_logits [B, N+1, *P], aux_logits
    [B, N, 2, *P])`` and the predictor ``[B, 2N+1, *P]``: the main head's N+1 probabilities,
    then each auxiliary head's foreground probability ``g^j``.
    With ``tta_flip`` the probabilities are the mean over :data:`FLIP_COMBINATIONS`.
    ``autocast_device`` ("cuda") runs the network under mixed precision; softmax stays float32.
    """

    def probabilities(window: torch.Tensor) -> torch.Tensor:
        window = _plain(window)
        if channels_last:
            window = window.contiguous(memory_format=torch.channels_last_3d)
        flips = FLIP_COMBINATIONS if tta_flip else ((),)
        total = None
        for axes in flips:
            x = torch.flip(window, axes) if axes else window
            if autocast_device is not None:
                with torch.autocast(autocast_device):
                    logits = predict_logits(x)
            else:
                logits = predict_logits(x)
            if aux_heads:
                main_logits, aux_logits = logits
                probs = torch.cat(
                    [torch.softmax(_plain(main_logits).float(), dim=1), torch.softmax(_plain(aux_logits).float(), dim=2)[:, :, 1]],
                    dim=1,
                )
            elif sigmoid:
                probs = torch.sigmoid(_plain(logits).float())
            else:
                probs = torch.softmax(_plain(logits).float(), dim=1)
            if axes:
                probs = torch.flip(probs, axes)
            total = probs if total is None else total + probs
        return total / len(flips)

    return probabilities


def window_count(shape: Sequence[int], patch_size: Sequence[int], overlap: float) -> int:
    """How many windows :func:`sliding_window_probabilities` runs over a volume of spatial
    ``shape``: per axis (after padding the volume to at least the patch) windows start every
    ``int(patch · (1 − overlap))`` voxels (at least 1), the last one flush with the end,
    MONAI's ``dense_patch_slices``; an axis the patch covers exactly has one window."""
    total = 1
    for size, patch in zip(shape, patch_size):
        size, patch = max(int(size), int(patch)), int(patch)
        step = patch if size == patch else max(int(patch * (1 - overlap)), 1)
        total *= -(-(size - patch) // step) + 1  # starts 0, step, ... until a window reaches the end
    return total


def sliding_window_probabilities(
    method: torch.nn.Module,
    image: np.ndarray | torch.Tensor,
    patch_size: tuple[int, int, int] | list[int],
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    tta_flip: bool = False,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
    progress: bool = False,
    aux_heads: bool = False,
    task_probabilities: bool = False,
    on_windows: Callable[[int], object] | None = None,
    tasks: Sequence[int] | None = None,
    network: Callable[[torch.Tensor], object] | None = None,
) -> torch.Tensor:
    """Class probabilities of a whole volume: image ``[X, Y, Z]`` → float32 ``[N+1, X, Y, Z]`` on the CPU.

    With ``task_probabilities`` (task-prompted methods, ``method.task_logits``) the result is
    ``[N, X, Y, Z]``: each task's own sigmoid probability σ(z_c), blended per task. ``tasks``
    (global class ids 1..N, with ``task_probabilities`` only): the tasks the image's dataset
    annotates, read by ``method.task_logits_for(window, tasks)`` (Hermes then uses only their
    task tokens); None: ``method.task_logits``, every task.

    With ``aux_heads`` (methods whose network has them, e.g. TCT) the result is
    ``[2N+1, X, Y, Z]``: the main head's N+1 probabilities, then ATH j's foreground
    probability ``g^j`` for j = 1..N, blended the same way (``method.predict_with_aux``).

    ``image`` is in prepared space (RAS, resampled, normalised). ``method`` must provide
    ``predict_logits([B, 1, *P]) -> [B, N+1, *P]`` (main head only); it is put in eval mode
    and moved to ``device`` (and to channels-last 3D memory format when ``channels_last``).
    Windows of ``patch_size`` overlap by ``overlap`` and are blended with a Gaussian weight.

    ``progress`` shows MONAI's bar over the network calls; ``on_windows(n)`` instead is called
    after each network call with its number of windows (``n`` ≤ ``sw_batch_size``; they add up
    to :func:`window_count`), e.g. a tqdm bar's ``update``.

    ``network``: what to call on each window batch instead of the method's own entry point
    (``predict_logits``, ``predict_with_aux`` or ``task_logits`` as the flags choose), with
    the same inputs and outputs: an exported network (:func:`tctseg.inference.backends.network_for`).
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    device = torch.device(device)
    volume = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    volume = _plain(volume).to(dtype=torch.float32, device="cpu")
    if volume.ndim != 3:
        raise ValueError(f"image must be [X, Y, Z], got shape {list(volume.shape)}")
    method.eval()
    method.to(device)
    if channels_last:
        method.to(memory_format=torch.channels_last_3d)
    if task_probabilities and aux_heads:
        raise ValueError("task_probabilities and aux_heads exclude each other")
    if tasks is not None and not task_probabilities:
        raise ValueError("tasks: only with task_probabilities (task-prompted methods)")
    network_call = method.predict_with_aux if aux_heads else method.task_logits if task_probabilities else method.predict_logits
    if tasks is not None:
        network_call = functools.partial(method.task_logits_for, tasks=tuple(int(t) for t in tasks))
    if network is not None:
        if tasks is not None:
            raise ValueError("network: not with tasks (a per-dataset task call is the method's own)")
        network_call = network
    predictor = window_probabilities(
        network_call,
        tta_flip=tta_flip,
        channels_last=channels_last,
        autocast_device="cuda" if device.type == "cuda" else None,
        aux_heads=aux_heads,
        sigmoid=task_probabilities,
    )
    if on_windows is not None:
        predictor = _counting(predictor, on_windows)
        progress = False
    with torch.inference_mode():
        probs = sliding_window_inference(
            volume[None, None],
            roi_size=tuple(int(p) for p in patch_size),
            sw_batch_size=int(sw_batch_size),
            predictor=predictor,
            overlap=float(overlap),
            mode="gaussian",
            padding_mode="constant",
            cval=0.0,
            sw_device=device,
            device=torch.device("cpu"),
            progress=progress,
        )
    return _plain(probs)[0].float().contiguous()


def _counting(
    predictor: Callable[[torch.Tensor], torch.Tensor], on_windows: Callable[[int], object]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``predictor`` that reports each batch's number of windows ``[B, 1, *P]`` → ``on_windows(B)``."""

    def counted(windows: torch.Tensor) -> torch.Tensor:
        out = predictor(windows)
        on_windows(int(windows.shape[0]))
        return out

    return counted
