"""``autopetl train``: train one PETL configuration on a task, with a progress bar and a summary."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from autopetl.cli._console import console, err_console, interactive, status
from autopetl.cli._options import (
    SEED,
    add_backbone_options,
    add_data_options,
    backbone_spec,
    float_in,
    int_in,
    parse_set_options,
)
from autopetl.cli.store_cmd import add_db_option
from autopetl.errors import ConfigError
from autopetl.precision import PRECISION_HELP, PRECISIONS
from autopetl.recording import TrainRecorder
from autopetl.tasks import get_task

# The methods, the training loop and timm are imported by run(), so that `autopetl train --help`
# and argument errors answer at once.
if TYPE_CHECKING:
    from autopetl.backbones import BackboneSpec
    from autopetl.tasks import TaskSpec
    from autopetl.train_config import TrainConfig
    from autopetl.training import EpochMetrics, TrainResult


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train one PETL configuration on a task")
    parser.add_argument("--task", required=True, help="e.g. vtab/dsprites_loc")
    parser.add_argument(
        "--method",
        default="vpt",
        help="a PETL method: vpt (default), dvpt, lora, adapter, linear, full, bias, ...; "
        "an unknown name lists them all",
    )
    parser.add_argument(
        "--set",
        dest="set_options",
        action="append",
        metavar="KEY=VALUE",
        help="a method option, e.g. --set deep=true --set prompt_length=10",
    )
    parser.add_argument(
        "--epochs", type=int_in(1, 10_000), default=None, help="default 10 (2 with --smoke-test)"
    )
    parser.add_argument("--lr", type=float_in(0, 1000, above_low=True), default=1e-3)
    parser.add_argument("--weight-decay", type=float_in(0, 10), default=1e-4)
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    parser.add_argument("--batch-size", type=int_in(1, 65_536), default=64)
    parser.add_argument("--warmup-epochs", type=float_in(0, 10_000), default=1.0)
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help=PRECISION_HELP,
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="DIR",
        help="save the tunable weights (safetensors) and method.json here after training",
    )
    parser.add_argument(
        "--smoke-test",
        action="store_true",
        help="tiny random-init ViT at 32 px, a small subset, 2 epochs",
    )
    add_backbone_options(parser)
    add_data_options(parser)
    add_db_option(parser)
    parser.add_argument(
        "--name", default=None, help="name of the recorded run (default train-TASK-METHOD-TIME)"
    )
    parser.set_defaults(func=run)


def _check_output(folder: Path) -> None:
    """Make sure the weights can be written before training starts (not lost after it)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(
            f"--output {folder}: cannot write there ({exc.strerror or exc}); choose a folder "
            "you can write to"
        ) from None


def run(args: argparse.Namespace) -> int:
    from autopetl.backbones import check_weights_file
    from autopetl.methods.options import method_options
    from autopetl.tasks.sources import check_data_here
    from autopetl.train_config import TrainConfig
    from autopetl.trial import warmup_within

    # The mistakes that need no torch or database are found first, in well under a second, and
    # leave nothing behind: a task and its data, a method or its options, the training and
    # backbone options, a weights file, an output folder that cannot be written.
    task = get_task(args.task)
    check_data_here(task, args.data_root)
    values = parse_set_options(args.set_options)
    method_options(args.method, values)
    epochs = args.epochs if args.epochs is not None else (2 if args.smoke_test else 10)
    config = TrainConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        warmup_epochs=warmup_within(args.warmup_epochs, epochs),
        seed=args.seed,
        precision=args.precision,
        device=args.device,
    )
    spec = backbone_spec(args)
    check_weights_file(spec.weights)
    if args.output is not None:
        _check_output(args.output)
    from autopetl.store.provisional import provisional_database

    # A later refusal (a checkpoint of another model, a method that does not apply to the
    # backbone) removes the database file this command created for nothing.
    with provisional_database(args.db):
        return _train(args, task, values, spec, config)


def _train(
    args: argparse.Namespace,
    task: TaskSpec,
    values: dict[str, Any],
    spec: BackboneSpec,
    config: TrainConfig,
) -> int:
    from autopetl.backbones import build_backbone, describe
    from autopetl.methods import build_method
    from autopetl.methods.io import save_tunable
    from autopetl.methods.registry import check_applies
    from autopetl.objectives import measure
    from autopetl.pipeline import SMOKE_TRAIN_IMAGES, load_task_data, train_one
    from autopetl.training import resolve_device

    resolve_device(args.device)  # a GPU this machine lacks: one line, before any data loads
    method = build_method(args.method, values)
    epochs = config.epochs
    # Open the database first: a bad --db fails before any data is loaded.
    recorder = TrainRecorder.open(args.db, args.name, task=task.name, method=method.name)
    with status(f"preparing {task.name} at {spec.img_size}px"):
        data = load_task_data(
            task,
            spec.img_size,
            data_root=args.data_root,
            train_limit=SMOKE_TRAIN_IMAGES if args.smoke_test else None,
        )
    with status(f"building {spec.name} ({spec.weights})"):
        backbone = build_backbone(spec, task.num_classes)
    check_applies(method, backbone)  # lora on a Swin: one line, before the progress bar

    progress = Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}", markup=False),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )
    bar = progress.add_task(f"{method.name} on {task.name}", total=None, status="")

    def on_step(step: int, total: int) -> None:
        progress.update(bar, completed=step, total=total)

    def on_epoch(m: EpochMetrics) -> None:
        status = f"epoch {m.epoch}/{epochs} loss {m.train_loss:.3f} val {m.val_acc:.1%}"
        progress.update(bar, status=status)
        if not interactive():  # a log gets one line per epoch (the bar is drawn once, at the end)
            err_console.print(
                f"{method.name} on {task.name}: {status}, {m.seconds:.1f} s", markup=False
            )
        recorder.epoch(m)

    recorder.begin(
        method_config=method.config.to_dict(),
        backbone=spec.to_dict(),
        train_config=dataclasses.asdict(config),
        options={"smoke_test": args.smoke_test, "data_root": str(args.data_root or "")},
    )
    url = recorder.store.url
    with progress, recorder.recording():
        model, result = train_one(
            backbone, method, data, config, on_step=on_step, on_epoch=on_epoch
        )
        recorder.completed(result, measure(model, spec.img_size))
    err_console.print(f"recorded as search {recorder.name} in {url}", markup=False)

    table = Table(title=f"{method.name} on {task.name}", show_header=False)
    rows = [
        ("method config", str(method.config.to_dict())),
        ("backbone", describe(spec.to_dict())),
        ("val accuracy (best)", f"{result.best_val_acc:.2%} (epoch {result.best_epoch})"),
        ("val accuracy (last)", f"{result.last_val_acc:.2%}"),
        ("chance", f"{1 / task.num_classes:.2%}"),
        (
            "tunable parameters",
            f"{result.tunable_params:,} ({result.tunable_params_without_head:,} without the head)",
        ),
        ("wall time", f"{result.wall_time_s:.1f} s"),
        ("throughput", _throughput(result, len(data.train.labels) + len(data.eval.labels))),
        ("peak memory (this run)", f"{result.peak_memory_mb:.0f} MiB"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    if args.output is not None:
        save_tunable(model, method, spec.to_dict(), task.num_classes, args.output)
        console.print(f"saved the tunable weights and method config to {args.output}")
    return 0


def _throughput(result: TrainResult, images: int) -> str:
    """Training speed, and for a head-only run what its one backbone pass cost (the real price)."""
    where = f"({result.device}, {result.precision})"
    if not result.cached_features:
        return f"{result.images_per_s:,.0f} images/s {where}"
    if result.feature_seconds > 0:
        backbone = (
            f"the frozen backbone ran once over {images:,} images in "
            f"{result.feature_seconds:.1f} s ({images / result.feature_seconds:,.0f} images/s)"
        )
    else:
        backbone = "the frozen backbone's features came from this process's cache"
    return f"{result.images_per_s:,.0f} images/s for the head alone {where}; {backbone}"
