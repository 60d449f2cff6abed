"""GPU readiness on a CPU: every method through the trainer's mixed-precision path (CPU bf16
autocast standing in for CUDA's), and no tensor created off the input's device."""

from __future__ import annotations

import math

import pytest
import torch

from tctseg.files.run_records import read_log
from tctseg.methods import available_methods, build_method
from tctseg.training import trainer as trainer_module
from tctseg.checkpoint import load_checkpoint
from tctseg.training.trainer import Trainer

from _training_data import memory_cases, tiny_config, use_sampler

METHODS = sorted(available_methods())


def fixed_batch(device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    train, _ = memory_cases()
    image = torch.stack([torch.from_numpy(c.image[:16, :16, :8].copy())[None] for c in train])
    labels = torch.stack([torch.from_numpy(c.label[:16, :16, :8].astype("int64")) for c in train])
    annotated = torch.tensor([[True, False], [False, True]])
    return {k: v.to(device) for k, v in {"image": image, "labels": labels, "annotated": annotated}.items()}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_through_the_mixed_precision_path(tmp_path, monkeypatch, method, one_thread):
    use_sampler(monkeypatch)
    # the test-only switch: the trainer's CUDA branch (autocast + scaler) routed to CPU bf16 autocast
    monkeypatch.setattr(trainer_module, "autocast_dtype", lambda amp, device: torch.bfloat16)
    train, val = memory_cases()
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(method, epochs=1), out, device="cpu", train_cases=train, val_cases=val, progress=False)
    assert trainer.amp_dtype == torch.bfloat16
    trainer.fit()

    rows = read_log(out / "log.csv")
    assert math.isfinite(rows[-1]["loss_total"]) and 0.0 <= rows[-1]["val_dice_mean"] <= 1.0
    assert all(p.dtype == torch.float32 for p in trainer.method.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = trainer.method(fixed_batch(), 0)
    assert result.total.dtype == torch.float32, f"{method}: loss in {result.total.dtype} under autocast"
    assert torch.isfinite(result.total)

    # optimizer and scaler state round-trip through the checkpoint into a resumed trainer
    state = load_checkpoint(out / "checkpoint_last.pt")
    assert "scaler" in state and state["epoch"] == 1
    resumed = Trainer(tiny_config(method, epochs=2), out, resume=True, device="cpu", train_cases=train,
                      val_cases=val, progress=False)
    assert resumed.start_epoch == 1
    saved = trainer.optimizer.state_dict()["state"]
    loaded = resumed.optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys() and saved
    for key in saved:
        for name, value in saved[key].items():
            if torch.is_tensor(value):
                assert torch.equal(value, loaded[key][name]), (method, key, name)
    assert resumed.scaler.state_dict() == trainer.scaler.state_dict()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_creates_its_tensors_on_the_inputs_device(method):
    """On the meta device a tensor made without ``device=`` (the usual ``torch.zeros(...)`` on
    the CPU while the model is on CUDA) meets a meta tensor and fails."""
    model = build_method(tiny_config(method)).to("meta")
    result = model(fixed_batch("meta"), 1)
    assert result.total.device.type == "meta"
    for name, part in result.parts.items():
        assert part.device.type == "meta", f"{method}: part {name} on {part.device}"
