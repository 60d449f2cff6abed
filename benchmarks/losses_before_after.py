"""Before/after of the loss hot-path changes: the losses of an older commit vs the working tree.

    python benchmarks/losses_before_after.py                # vs 64a0686 (before issue 8)
    python benchmarks/losses_before_after.py --steps        # also whole TCT training steps

1. Checks that old and new give BITWISE equal values and gradients (marginal Dice, auxiliary
   Dice terms, every consistency threshold with and without the confidence filter, float32
   and float64, contiguous and channels-last inputs, ties in the argmax).
2. Times loss-only forward + backward at the benchmark patch (96×96×32, batch 2, N = 5),
   old and new interleaved in one process; with ``--steps`` also a whole TCT training step
   with the old and with the new losses, next to a TAL step.

The old losses are read with ``git show REV:src/tctseg/losses/*.py`` into a temporary package.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import run as bench  # noqa: E402  (benchmarks/run.py)

LOSS_FILES = ("__init__", "consistency", "dice", "rampup", "uncertainty")
LOSS_NAMES = ("marginal_dice_loss", "auxiliary_dice_terms", "consistency_terms")


def load_old_losses(rev: str, folder: Path):
    """The ``tctseg.losses`` package of commit ``rev`` as a module named ``old_losses``."""
    package = folder / "old_losses"
    package.mkdir()
    for name in LOSS_FILES:
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:src/tctseg/losses/{name}.py"],
                              capture_output=True, text=True, check=True).stdout
        (package / f"{name}.py").write_text(text.replace("tctseg.losses.", "old_losses."), encoding="utf-8")
    sys.path.insert(0, str(folder))
    return importlib.import_module("old_losses")


def check_equal(old, new) -> int:
    """Assert bitwise equal outputs and gradients over a grid of cases; returns how many tensors."""
    n, compared = 5, 0
    for patch, batch, dtype in (((96, 96, 32), 2, torch.float32), ((16, 16, 8), 3, torch.float64), ((20, 12, 8), 1, torch.float32)):
        data = bench.synthetic_batch(patch, batch, torch.device("cpu"), seed=batch)
        labels, annotated = data["labels"], data["annotated"]
        for trial in range(4):
            g = torch.Generator().manual_seed(trial)
            main_logits = torch.randn((batch, n + 1, *patch), dtype=dtype, generator=g)
            aux_logits = torch.randn((batch, n, 2, *patch), dtype=dtype, generator=g)
            if trial == 1:  # ties in the argmax
                main_logits = main_logits.round()
            if trial >= 2:  # as the network gives them: channels-last, ATHs unflattened from one conv
                main_logits = main_logits.contiguous(memory_format=torch.channels_last_3d)
                aux_logits = aux_logits.flatten(1, 2).contiguous(memory_format=torch.channels_last_3d).unflatten(1, (n, 2))
            results = []
            for module in (old, new):
                m, a = main_logits.clone().requires_grad_(), aux_logits.clone().requires_grad_()
                main, aux = torch.softmax(m, 1), torch.softmax(a, 2)
                marginal = module.marginal_dice_loss(main, labels, annotated)
                aux_terms = module.auxiliary_dice_terms(aux, labels, annotated)
                outputs = [marginal, aux_terms]
                for threshold in ("median", "task_mean", "batch_mean", 0.5, None):
                    for confidence in (None, 0.5):
                        c = module.consistency_terms(main, aux, threshold, True, confidence)
                        outputs += [c.terms, c.iou, c.keep, c.confidence]
                total = marginal + aux_terms.sum() + module.consistency_terms(main, aux, "median", False).loss
                total.backward()
                results.append(outputs + [total, m.grad, a.grad])
            for k, (x, y) in enumerate(zip(*results)):
                if x.dtype != y.dtype or not torch.equal(x, y):
                    raise AssertionError(f"old and new differ: patch {patch}, trial {trial}, output {k}")
                compared += 1
    return compared


@contextlib.contextmanager
def methods_using(losses):
    """Make the TCT and TAL methods call ``losses``' functions for the duration."""
    import tctseg.methods.tal as tal
    import tctseg.methods.tct as tct

    saved = {m: {k: getattr(m, k) for k in LOSS_NAMES if hasattr(m, k)} for m in (tct, tal)}
    for module, names in saved.items():
        for k in names:
            setattr(module, k, getattr(losses, k))
    try:
        yield
    finally:
        for module, names in saved.items():
            for k, v in names.items():
                setattr(module, k, v)


def time_losses(old, new, patch, batch: int, width: int, repeats: int, steps: bool) -> dict:
    device = torch.device("cpu")
    n = len(bench.CLASSES)
    data = bench.synthetic_batch(patch, batch, device)
    g = torch.Generator().manual_seed(1)
    main_logits = torch.randn((batch, n + 1, *patch), generator=g).requires_grad_()
    aux_logits = torch.randn((batch, n, 2, *patch), generator=g).requires_grad_()
    uncertainty = new.UncertaintyWeightedLoss(2)
    labels, annotated = data["labels"], data["annotated"]

    def whole(module):
        def run() -> None:
            main, aux = torch.softmax(main_logits, 1), torch.softmax(aux_logits, 2)
            total = uncertainty([module.marginal_dice_loss(main, labels, annotated),
                                 module.auxiliary_dice_terms(aux, labels, annotated).sum(1).mean()])
            (total + module.consistency_terms(main, aux).loss).backward()
        return run

    def part(module, which: str):
        if which == "marginal":
            return lambda: module.marginal_dice_loss(torch.softmax(main_logits, 1), labels, annotated).backward()
        if which == "aux":
            return lambda: module.auxiliary_dice_terms(torch.softmax(aux_logits, 2), labels, annotated).sum().backward()
        return lambda: module.consistency_terms(torch.softmax(main_logits, 1), torch.softmax(aux_logits, 2)).loss.backward()

    fns = {"loss_old": whole(old), "loss_new": whole(new)}
    for which in ("marginal", "aux", "consistency"):
        fns[f"{which}_old"], fns[f"{which}_new"] = part(old, which), part(new, which)
    if steps:
        step_old = bench.make_step(bench.build("tct", width, patch, batch, device), data, device)
        fns["tct_step_new"] = bench.make_step(bench.build("tct", width, patch, batch, device), data, device)
        fns["tal_step"] = bench.make_step(bench.build("tal", width, patch, batch, device), data, device)

        def old_step() -> None:
            with methods_using(old):
                step_old()

        fns["tct_step_old"] = old_step
    times = bench.time_interleaved(fns, device, 1, repeats)
    return {"median_ms": {k: round(1e3 * bench.median(v), 1) for k, v in times.items()},
            "times_s": {k: [round(x, 4) for x in v] for k, v in times.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rev", default="64a0686", help="the commit whose losses are 'before'")
    p.add_argument("--patch", type=int, nargs=3, default=[96, 96, 32])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", action="store_true", help="also time whole training steps")
    args = p.parse_args(argv)
    import tctseg.losses as new

    with tempfile.TemporaryDirectory() as tmp:
        old = load_old_losses(args.rev, Path(tmp))
        compared = check_equal(old, new)
        print(f"old ({args.rev}) == new: {compared} tensors bitwise equal (values and gradients)", flush=True)
        result = time_losses(old, new, tuple(args.patch), args.batch, args.width, args.repeats, args.steps)
    result.update({"rev": args.rev, "patch": args.patch, "batch": args.batch, "width": args.width,
                   "load_average": [round(x, 2) for x in os.getloadavg()], "machine": bench.machine_info(torch.device("cpu"))})
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
