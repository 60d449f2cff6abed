"""Checkpoints: weights-only loading, atomic writes, clear errors, compatibility checks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from _training_data import memory_cases, tiny_config, use_sampler

from tctseg.config import config_from_dict
from tctseg.errors import CheckpointError
from tctseg.training import Trainer, check_compatible, load_checkpoint, load_method_from_checkpoint, save_checkpoint
from tctseg.training.seeding import capture_rng_state, restore_rng_state


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    use_sampler(mp)
    train, _ = memory_cases()
    out = tmp_path_factory.mktemp("ckpt") / "run"
    trainer = Trainer(tiny_config("tct", epochs=1), out, device="cpu", train_cases=train, val_cases=[], progress=False)
    trainer.fit()
    mp.undo()
    return out, trainer


def test_checkpoint_loads_with_weights_only(trained_run):
    out, trainer = trained_run
    state = torch.load(out / "checkpoint_last.pt", weights_only=True)
    expected_keys = {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config", "classes",
                     "method", "preprocessing", "tctseg_version", "best_metric", "history"}
    assert expected_keys <= set(state)
    assert state["epoch"] == 1 and state["method"] == "tct"
    assert state["preprocessing"]["spacing"] == [1.0, 1.0, 3.0]
    assert isinstance(state["rng"]["numpy"]["keys"], list) and len(state["rng"]["numpy"]["keys"]) == 624
    for key, value in trainer.method.state_dict().items():
        assert torch.equal(state["model"][key], value), key
    # the learnable loss weights travel with the model and the optimiser
    assert "uncertainty.log_vars" in state["model"]
    assert len(state["optimizer"]["state"]) == len(list(trainer.method.parameters()))


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    save_checkpoint({"model": {}, "config": {}, "classes": [], "epoch": 0, "rng": capture_rng_state()}, tmp_path / "c.pt")
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


def test_load_method_from_checkpoint_predicts_like_the_trained_method(trained_run):
    out, trainer = trained_run
    method, config = load_method_from_checkpoint(out / "checkpoint_last.pt")
    assert config.method.name == "tct" and config.network.width == 4
    image = torch.randn(1, 1, 16, 16, 8)
    trainer.method.eval()
    with torch.no_grad():
        assert torch.allclose(method.predict_logits(image), trainer.method.predict_logits(image), atol=1e-6)


def test_missing_and_corrupt_checkpoints_name_the_file(tmp_path, trained_run):
    with pytest.raises(CheckpointError, match="nothing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nothing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((trained_run[0] / "checkpoint_last.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable tctseg checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a tctseg checkpoint"):
        load_method_from_checkpoint(foreign)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_last.pt"
    save_checkpoint({"epoch": 1}, path)

    def broken_save(obj, f):
        open(f, "wb").write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="checkpoint_last.pt: cannot write checkpoint"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_last.pt"]


def test_check_compatible_names_what_differs(trained_run):
    state = load_checkpoint(trained_run[0] / "checkpoint_last.pt")
    same = config_from_dict(state["config"])
    check_compatible(state, same)
    other_classes = config_from_dict({**state["config"], "classes": ["liver", "kidney"]},
                                     ["datasets.1.label_map={1: kidney}"])
    with pytest.raises(CheckpointError, match=r"classes \['liver', 'spleen'\].*\['liver', 'kidney'\]"):
        check_compatible(state, other_classes)
    other_spacing = config_from_dict(state["config"], ["preprocessing.spacing=[1.5,1.5,3]"])
    with pytest.raises(CheckpointError, match=r"preprocessing.spacing: checkpoint \[1.0, 1.0, 3.0\], config \[1.5, 1.5, 3.0\]"):
        check_compatible(state, other_spacing)
    # the number of preprocessing workers does not change the data
    check_compatible(state, config_from_dict(state["config"], ["preprocessing.workers=7"]))
