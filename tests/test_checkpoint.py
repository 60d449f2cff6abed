"""Checkpoints: weights-only loading, atomic writes, clear errors, compatibility checks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from _training_data import memory_cases, tiny_config, use_sampler

from tctseg.cli import main
from tctseg.config import config_from_dict
from tctseg.errors import CheckpointError
from tctseg.checkpoint import check_compatible, load_checkpoint, load_method_from_checkpoint, save_checkpoint
from tctseg.training import Trainer
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


# --------------------------------------------------------------------------- fields of the wrong type (issue 31, item 5)

WRONG_TYPES = [
    ("classes", 5, "field 'classes' is an int (5), expected a list of class names"),
    ("classes", ["liver", 2], "field 'classes' is a list (['liver', 2]), expected a list of class names"),
    ("preprocessing", "abc", "field 'preprocessing' is a string ('abc'), expected a dict of preprocessing settings"),
    ("model", [1, 2, 3], "field 'model' is a list ([1, 2, 3]), expected a dict of tensors (the method's state dict)"),
    ("model", {"conv.weight": [1.0]}, "field 'model' holds 'conv.weight': a list ([1.0]), expected a dict of tensors"),
    # a module's extra state (CLIP-Driven's embeddings record) may be plain data, nothing else
    ("model", {"_extra_state": {"a": 1}, "conv.bias": "x"}, "field 'model' holds 'conv.bias': a string ('x'), expected"),
    ("model", {"_extra_state": {1: "a"}}, "field 'model' holds '_extra_state': a dict ({1: 'a'}), expected"),
    ("config", "x", "field 'config' is a string ('x'), expected a dict (the run's config)"),
    ("epoch", "3", "field 'epoch' is a string ('3'), expected a number of epochs (an int >= 0)"),
    ("epoch", -1, "field 'epoch' is an int (-1), expected a number of epochs (an int >= 0)"),
    ("method", 3, "field 'method' is an int (3), expected a method name"),
    ("optimizer", [1], "field 'optimizer' is a list ([1]), expected an optimizer state dict (state and param_groups)"),
    ("rng", 5, "field 'rng' is an int (5), expected a dict of random number generator states"),
    ("best_metric", "0.9", "field 'best_metric' is a string ('0.9'), expected a number or None"),
    ("history", list(range(20)), "field 'history' is a list of 20 items, expected a list of per-epoch dicts"),
]


@pytest.mark.parametrize("field, value, expected", WRONG_TYPES, ids=[f"{f}={v!r}"[:30] for f, v, _ in WRONG_TYPES])
def test_a_checkpoint_field_of_the_wrong_type_is_one_line_naming_the_file_and_field(tmp_path, trained_run, field, value,
                                                                                    expected):
    state = torch.load(trained_run[0] / "checkpoint_last.pt", weights_only=True)
    path = tmp_path / "edited.pt"
    torch.save({**state, field: value}, path)
    with pytest.raises(CheckpointError) as error:
        load_method_from_checkpoint(path)  # predict's and PFL's way in; resume and fine-tuning use load_checkpoint
    assert str(error.value).startswith(f"{path}: {expected}") and "\n" not in str(error.value)


def test_wrong_types_are_refused_by_predict_and_train_resume_with_one_line(tmp_path, trained_run, capsys):
    state = torch.load(trained_run[0] / "checkpoint_last.pt", weights_only=True)
    edited = tmp_path / "model.pt"
    torch.save({**state, "classes": 5}, edited)
    scans = tmp_path / "scans"
    scans.mkdir()
    assert main(["predict", str(edited), str(scans), str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"tctseg predict: error: {edited}: field 'classes' is an int (5), expected a list of class names"

    # a resumed run: the damaged checkpoint is named before anything is rewritten
    run = tmp_path / "run"
    run.mkdir()
    torch.save({**state, "preprocessing": "abc"}, run / "checkpoint_last.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint_last.pt: field 'preprocessing' is a string \('abc'\)"):
        Trainer(tiny_config("tct", epochs=2), run, resume=True, device="cpu", train_cases=memory_cases()[0],
                val_cases=[], progress=False)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint_last.pt"]


def test_a_damaged_rng_or_optimizer_state_is_one_line_on_resume(tmp_path, trained_run):
    state = torch.load(trained_run[0] / "checkpoint_last.pt", weights_only=True)
    run = tmp_path / "run"
    run.mkdir()
    kwargs = dict(resume=True, device="cpu", train_cases=memory_cases()[0], val_cases=[], progress=False)
    for damage, expected in ((dict(rng={"torch": 5}), r"AttributeError: 'int' object has no attribute 'cpu'"),
                             (dict(rng={}), r"KeyError: 'torch'"),
                             (dict(optimizer={"state": {}, "param_groups": [{}]}), r"KeyError: 'params'")):
        torch.save({**state, **damage}, run / "checkpoint_last.pt")
        with pytest.raises(CheckpointError, match=r"checkpoint_last.pt: cannot resume from it \(" + expected):
            Trainer(tiny_config("tct", epochs=2), run, **kwargs)


# --------------------------------------------------------------------------- weights of another size (issue 31, smaller)


def test_a_width_mismatch_names_the_tensor_its_two_shapes_and_the_setting(tmp_path, trained_run):
    out, _ = trained_run
    state = torch.load(out / "checkpoint_last.pt", weights_only=True)
    first = "network.backbone.encoder.0.0.weight"
    assert list(state["model"][first].shape) == [4, 1, 3, 3, 3]
    # resuming (or fine-tuning from) a width-4 run with network.width=8: torch said only "Error(s) in loading state_dict"
    run = tmp_path / "run"
    run.mkdir()
    torch.save(state, run / "checkpoint_last.pt")
    wider = config_from_dict(state["config"], ["network.width=8"])
    kwargs = dict(device="cpu", train_cases=memory_cases()[0], val_cases=[], progress=False)
    expected = (rf"checkpoint_last.pt: weights do not fit method 'tct': {first} is \[4, 1, 3, 3, 3\] in the checkpoint, "
                r"\[8, 1, 3, 3, 3\] in the model \(and \d+ more tensor\(s\)\) "
                r"\(the checkpoint was trained with network.width 4, the config has 8\)$")
    with pytest.raises(CheckpointError, match=expected):
        Trainer(wider, run, resume=True, **kwargs)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint_last.pt"]  # config.yaml not rewritten
    with pytest.raises(CheckpointError, match=expected.replace("checkpoint_last.pt", "init.pt")):
        Trainer(wider, tmp_path / "fine_tuned", init_checkpoint=_copy(out / "checkpoint_last.pt", tmp_path / "init.pt"),
                **kwargs)
    # a stored config that no longer matches the stored weights (predict): the tensor is named
    edited = tmp_path / "edited.pt"
    torch.save({**state, "config": {**state["config"], "network": {**state["config"]["network"], "width": 8}}}, edited)
    with pytest.raises(CheckpointError, match=rf"edited.pt: weights do not fit method 'tct': {first} is \[4, 1, 3, 3, 3\] "
                                              r"in the checkpoint, \[8, 1, 3, 3, 3\] in the model"):
        load_method_from_checkpoint(edited)
    # tensors missing or left over are named too
    fewer = tmp_path / "fewer.pt"
    torch.save({**state, "model": {k: v for k, v in state["model"].items() if k != first}}, fewer)
    with pytest.raises(CheckpointError, match=rf"fewer.pt: weights do not fit method 'tct': 1 tensor\(s\) missing from "
                                              rf"the checkpoint \({first}\)$"):
        load_method_from_checkpoint(fewer)


def _copy(source, target):
    target.write_bytes(source.read_bytes())
    return target
