"""The one training loop: outputs, logging, learning, guard rails."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from _training_data import interrupted_after_epochs, memory_cases, tiny_config, use_sampler

from tctseg.errors import OutputError, TrainingError
from tctseg.checkpoint import load_checkpoint
from tctseg.training import Trainer, learning_rate


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "method, parts",
    [
        ("tct", ["main", "aux", "log_var_1", "log_var_2", "consistency", "w", "kept_fraction"]),
        ("tal", ["main"]),
    ],
)
def test_trainer_runs_each_method_and_writes_every_output(tmp_path, monkeypatch, method, parts):
    use_sampler(monkeypatch)
    train, val = memory_cases()
    config = tiny_config(method, epochs=2, val_every=1)
    out = tmp_path / "run"
    summary = Trainer(config, out, device="cpu", train_cases=train, val_cases=val, progress=False).fit()

    for name in ("config.yaml", "checkpoint_last.pt", "checkpoint_best.pt", "log.csv", "progress.png"):
        assert (out / name).is_file(), name
    assert (out / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))

    rows = _rows(out / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for part in ["total", *parts]:
        assert all(math.isfinite(float(r[f"loss_{part}"])) for r in rows), part
    for r in rows:
        assert float(r["lr"]) == pytest.approx(1e-3)
        assert float(r["epoch_time_s"]) > 0
        per_class = [float(r["val_dice_liver"]), float(r["val_dice_spleen"])]
        assert all(0.0 <= d <= 1.0 for d in per_class)
        assert float(r["val_dice_mean"]) == pytest.approx(sum(per_class) / 2, abs=1e-5)

    state = load_checkpoint(out / "checkpoint_last.pt")
    assert state["epoch"] == 2 and state["method"] == method and state["classes"] == ["liver", "spleen"]
    best_mean = max(float(r["val_dice_mean"]) for r in rows)
    assert summary["best_metric"] == pytest.approx(best_mean, abs=1e-5)
    assert load_checkpoint(out / "checkpoint_best.pt")["best_metric"] == pytest.approx(best_mean, abs=1e-5)
    if method == "tct":
        # w(t) is the sigmoid ramp-up: exp(-5 (1 - t/R)^2) with R = 0.4 * 2 epochs, t = 0 then 1 (past R)
        assert float(rows[0]["loss_w"]) == pytest.approx(math.exp(-5.0), rel=1e-4)
        assert float(rows[1]["loss_w"]) == pytest.approx(1.0)
        # what the filter did, and the auxiliary heads' own validation DSC beside the MSH's
        for r in rows:
            for column in ("filter_absent", "filter_kept_liver", "filter_term_spleen", "val_ath_dice_liver"):
                assert 0.0 <= float(r[column]) <= 1.0, column
            ath = [float(r["val_ath_dice_liver"]), float(r["val_ath_dice_spleen"])]
            assert float(r["val_ath_dice_mean"]) == pytest.approx(sum(ath) / 2, abs=1e-5)
    else:
        assert not any(k.startswith(("filter_", "val_ath_")) for k in rows[0])


def test_ratio_parts_are_ratios_of_epoch_sums():
    from tctseg.training.logging import loss_part_columns

    row = loss_part_columns({"main": 0.5, "kept:num": 1.5, "kept:den": 2.0, "iou:num": 0.0, "iou:den": 0.0})
    assert row["loss_main"] == 0.5 and row["kept"] == 0.75
    assert math.isnan(row["iou"])  # no present pair in the whole epoch: an empty cell
    assert set(row) == {"loss_main", "kept", "iou"}


def test_loss_falls_when_overfitting(tmp_path, monkeypatch):
    use_sampler(monkeypatch)
    train, _ = memory_cases()
    config = tiny_config("tal", epochs=6, iterations_per_epoch=4, lr=1e-2, val_every=100)
    trainer = Trainer(config, tmp_path / "run", device="cpu", train_cases=train[:1], val_cases=[], progress=False)
    trainer.fit()
    losses = [float(r["loss_total"]) for r in _rows(tmp_path / "run" / "log.csv")]
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0], losses


def _nan_after(method, good_calls: int, bad_calls: int):
    """Make ``method`` return a NaN loss on calls good_calls+1 .. good_calls+bad_calls."""
    original = method.forward
    calls = {"n": 0}

    def forward(batch, epoch):
        calls["n"] += 1
        out = original(batch, epoch)
        if good_calls < calls["n"] <= good_calls + bad_calls:
            out.total = out.total * float("nan")
        return out

    method.forward = forward
    return calls


def test_a_few_nonfinite_losses_are_skipped(tmp_path, monkeypatch, caplog):
    use_sampler(monkeypatch)
    train, _ = memory_cases()
    config = tiny_config("tct", epochs=1, iterations_per_epoch=4, max_nonfinite_steps=3, val_every=100)
    trainer = Trainer(config, tmp_path / "run", device="cpu", train_cases=train, val_cases=[], progress=False)
    _nan_after(trainer.method, good_calls=1, bad_calls=2)
    with caplog.at_level("WARNING", logger="tctseg.training"):
        trainer.fit()
    assert sum("non-finite loss" in r.message for r in caplog.records) == 2
    assert all(torch.isfinite(p).all() for p in trainer.method.parameters())
    # the epoch means leave the two skipped steps out, so they stay finite
    row = _rows(tmp_path / "run" / "log.csv")[0]
    assert math.isfinite(float(row["loss_total"]))


def test_repeated_nonfinite_losses_stop_with_a_usable_checkpoint(tmp_path, monkeypatch):
    use_sampler(monkeypatch)
    train, _ = memory_cases()
    config = tiny_config("tct", epochs=3, iterations_per_epoch=4, max_nonfinite_steps=3, val_every=100)
    kwargs = dict(device="cpu", train_cases=train, val_cases=[], progress=False)
    with interrupted_after_epochs(1):
        Trainer(config, tmp_path / "run", **kwargs).fit()
    trainer = Trainer(config, tmp_path / "run", resume=True, **kwargs)
    weights = {k: v.clone() for k, v in trainer.method.state_dict().items()}
    _nan_after(trainer.method, good_calls=0, bad_calls=100)
    with pytest.raises(TrainingError, match=r"3 steps in a row.*checkpoint_last\.pt is usable"):
        trainer.fit()
    # no optimiser step was taken, and the last checkpoint still holds epoch 1's weights
    state = load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")
    assert state["epoch"] == 1
    for key, value in weights.items():
        assert torch.equal(trainer.method.state_dict()[key], value), key
        assert torch.equal(state["model"][key], value), key


def test_output_dir_holding_another_run_is_refused(tmp_path, monkeypatch):
    use_sampler(monkeypatch)
    train, _ = memory_cases()
    config = tiny_config("tal", epochs=1, iterations_per_epoch=1, val_every=100)
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.csv").write_text("epoch\n1\n")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"run.*holds another run \(log\.csv\).*--resume.*--overwrite"):
        Trainer(config, out, device="cpu", train_cases=train, val_cases=[], progress=False)
    assert (out / "log.csv").read_text() == "epoch\n1\n"  # nothing touched

    Trainer(config, out, overwrite=True, device="cpu", train_cases=train, val_cases=[], progress=False).fit()
    assert [r["epoch"] for r in _rows(out / "log.csv")] == ["1"]
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own outputs are replaced


def test_unwritable_output_dir_is_refused_before_training(tmp_path, monkeypatch):
    use_sampler(monkeypatch)
    train, _ = memory_cases()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="a_file/run: cannot write"):
        Trainer(tiny_config("tal"), blocker / "run", device="cpu", train_cases=train, val_cases=[], progress=False)


def test_learning_rate_schedules():
    assert learning_rate("constant", 0.1, 7, 10) == 0.1
    assert learning_rate("poly", 0.1, 0, 10) == pytest.approx(0.1)
    assert learning_rate("poly", 0.1, 5, 10) == pytest.approx(0.1 * 0.5**0.9)
    assert learning_rate("cosine", 0.1, 5, 10) == pytest.approx(0.05)
    assert learning_rate("cosine", 0.1, 10, 10) == pytest.approx(0.0, abs=1e-12)


def test_channels_last_input_reaches_the_model(tmp_path, monkeypatch):
    use_sampler(monkeypatch)
    train, _ = memory_cases()
    config = tiny_config("tal", epochs=1, iterations_per_epoch=1, val_every=100)
    trainer = Trainer(config, tmp_path / "run", device="cpu", train_cases=train, val_cases=[], progress=False)
    seen = []
    original = trainer.method.forward
    trainer.method.forward = lambda batch, epoch: (seen.append(batch["image"]), original(batch, epoch))[1]
    trainer.fit()
    assert seen[0].is_contiguous(memory_format=torch.channels_last_3d)
    conv = next(m for m in trainer.method.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert type(seen[0]) is torch.Tensor and np.isfinite(seen[0].numpy()).all()


def test_train_help_lists_every_method_with_its_description(capsys):
    from tctseg.cli import main
    from tctseg.methods import available_methods

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name, description in available_methods().items():
        assert f"{name}" in text and description.split(":")[0] in text
    assert "--resume" in text and "--overwrite" in text and "--no-prepare" in text
