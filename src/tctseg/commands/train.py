"""`tctseg train CONFIG`: train one method on the prepared data (CPU, one GPU, or torchrun DDP).

    tctseg train configs/phantom.yaml --method tct
    torchrun --nproc_per_node 4 -m tctseg train configs/paper_ct.yaml --method tct
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from tctseg.methods import available_methods

NAME = "train"
HELP = "train a method on the configured datasets (prepares the cache first)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    methods = available_methods()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "methods:\n" + "\n".join(f"  {name:<10} {text}" for name, text in methods.items())
    parser.add_argument("config", type=Path, help="experiment config (YAML)")
    parser.add_argument("--method", choices=sorted(methods), help="method to train (sets method.name; see below)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. train.epochs=5 (repeatable)")
    parser.add_argument("--output", type=Path, help="run folder (default: <output_dir>/<method>)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in the output folder from its last checkpoint")
    again.add_argument("--overwrite", action="store_true", help="delete the output folder's previous run and start again")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--prepare", action=argparse.BooleanOptionalAction, default=True,
                        help="bring the prepared cache up to date before training (default: yes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tctseg.devices import resolve_device
    from tctseg.config import load_config
    from tctseg.training import distributed as dist_utils
    from tctseg.training.build import build_trainer

    overrides = list(args.overrides)
    if args.method:
        overrides.append(f"method.name={args.method}")
    config = load_config(args.config, overrides)
    output_dir = args.output or Path(config.output_dir) / config.method.name
    check_config_is_kept(args.config, [output_dir])
    device_type = resolve_device(args.device)

    context = dist_utils.init_distributed(device_type)
    held = contextlib.ExitStack()
    created = not output_dir.exists()
    started, before = False, set()  # this process holds the folder, may tidy up after a failed first epoch
    try:
        if context.is_main:
            from tctseg.files.locking import folder_lock
            from tctseg.files.outputs import ensure_writable
            from tctseg.training.run_folder import check_output_dir
            from tctseg.training.trainer import check_resume, existing_run_files

            # an unusable run folder is reported before the cache is prepared, not after
            ensure_writable(output_dir, "the output folder")
            held.enter_context(folder_lock(output_dir, "training run"))  # one run per folder, until this exits
            check_output_dir(output_dir, args.resume, args.overwrite)
            if args.resume:
                # a changed optimizer or weight decay, or fewer epochs than done: refused before the cache is prepared
                check_resume(config, output_dir)
            before = existing_run_files(output_dir)  # a failed first epoch removes only what it wrote
            started = True
        if args.prepare:
            # one process prepares the cache; the others wait, then read it
            if context.is_main:
                from tctseg.preprocessing.cache import prepare

                prepare(config, roles=("train", "validation"), progress=not args.no_progress, wait_for_lock=True)
            dist_utils.barrier(context)
        # PFL: its three stages, each in its own sub-folder (tctseg.training.pfl_pipeline)
        trainer = build_trainer(
            config,
            output_dir,
            resume=args.resume,
            overwrite=args.overwrite,
            device=device_type,
            progress=not args.no_progress,
        )
        summary = trainer.fit()
        if context.is_main:
            best = summary["best_metric"]
            model = summary["best_checkpoint"] or summary["last_checkpoint"]  # PFL: its final stage's
            print(f"trained {summary['epochs_completed']} epochs; run folder {output_dir}"
                  + (f"; best validation DSC {best:.4f}" if best is not None else "")
                  + f"; predict with {model}")
    except BaseException:
        if started:
            from tctseg.training.trainer import discard_unstarted_run

            # failed before a first checkpoint: no config.yaml or tensorboard/ left that would make
            # the folder "another run" (a kill cannot tidy up; --resume then starts from epoch 0)
            discard_unstarted_run(output_dir, keep=before)
            held.close()  # the lock file goes; then the folder, if this command created it and it is empty
            if created:
                with contextlib.suppress(OSError):
                    output_dir.rmdir()
        raise
    finally:
        held.close()
        dist_utils.cleanup_distributed()
    return 0


def check_config_is_kept(config_path: Path, run_folders: list[Path]) -> None:
    """Refuse (OutputError, before anything is written) a config file that the training in one of
    ``run_folders`` would write over or remove: its own config.yaml (``train runs/x/config.yaml
    --output runs/x``), or a file inside its TensorBoard or PFL stage folders."""
    from tctseg.files.layout import RunLayout
    from tctseg.files.outputs import check_not_an_output

    for folder in run_folders:
        check_not_an_output(
            config_path, RunLayout(folder).written_by_training,
            "train from a copy of it kept outside the run folder, or choose another --output",
        )
