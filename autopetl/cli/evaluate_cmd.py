"""``autopetl evaluate``: re-train a search's chosen configurations on train800val200, test once."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from autopetl.cli._console import console, err_console, interactive, status
from autopetl.cli._invocation import command
from autopetl.cli._options import add_data_options
from autopetl.cli.store_cmd import add_db_option
from autopetl.precision import PRECISION_HELP, PRECISIONS
from autopetl.trial import shown_config, shown_value

if TYPE_CHECKING:
    from autopetl.evaluation import ConfigurationResult, EvaluationRun


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="re-train a search's chosen configurations on train800val200 and test them (VTAB-1k)",
        description=(
            "Re-train each chosen configuration with its searched hyper-parameters and epochs on "
            "train800val200, once per seed, and measure test accuracy once, after training. "
            "Configurations are chosen by validation accuracy only; the test split is never used "
            "to choose anything (docs/PROTOCOL.md)."
        ),
    )
    p.add_argument("--search", required=True, metavar="NAME")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--pareto", action="store_true", help="the Pareto front (val accuracy, params; default)"
    )
    which.add_argument("--best", action="store_true", help="the best validation accuracy")
    which.add_argument(
        "--best-per-method",
        action="store_true",
        help="each method's best validation accuracy (a table of methods)",
    )
    which.add_argument("--trial", metavar="KEY", default=None, help="one trial (its key)")
    p.add_argument("--seeds", type=int, default=3, help="runs per configuration, seeds 0..N-1")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0.0,
        help="fractions share a GPU; runs fall back to the CPU without CUDA",
    )
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument(
        "--test-size",
        type=int,
        default=None,
        help="test images (default: all; 4096 for dSprites; 1024 with --smoke-test)",
    )
    p.add_argument(
        "--artifacts",
        type=Path,
        default=None,
        help="where tunable weights are saved (default: artifacts/ beside the default database)",
    )
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="train on the smoke subset and test on 1024 images (default for --smoke-test searches)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run here, one run after another, without Ray (debugging)",
    )
    add_data_options(p)
    add_db_option(p)
    p.set_defaults(func=run)


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _trained_on(train_fraction: float | None) -> str:
    """What the runs train on: train800val200, or the search's fraction of the training set."""
    if train_fraction is None:
        return "train800val200"
    from autopetl.tasks.scale import fraction_label

    return f"{fraction_label(train_fraction)} of train + val"


def results_table(search: str, results: list[ConfigurationResult]) -> Table:
    """Per configuration: mean ± std test accuracy over seeds, and tunable parameters."""
    trained_on = _trained_on(results[0].train_fraction if results else None)
    table = Table(title=f"test accuracy of {search} ({trained_on} -> test, mean ± std over seeds)")
    table.add_column("trial", overflow="fold")
    table.add_column("method")
    table.add_column("test acc %", justify="right", no_wrap=True)
    table.add_column("seeds", justify="right")
    table.add_column("params", justify="right")
    table.add_column("w/o head", justify="right")
    table.add_column("config", overflow="fold", min_width=10)
    for r in sorted(results, key=lambda r: -r.mean):
        config = shown_config(r.config)  # as `trials` shows it: one name, one rounding
        table.add_row(
            r.trial_key,
            r.method,
            f"{_pct(r.mean)} ± {_pct(r.std)}",
            str(len(r.seeds)),
            "-" if r.tunable_params is None else f"{r.tunable_params:,}",
            "-" if r.tunable_params_without_head is None else f"{r.tunable_params_without_head:,}",
            " ".join(f"{k}={shown_value(v)}" for k, v in config.items()),
        )
    return table


def run(args: argparse.Namespace) -> int:
    from autopetl.errors import ConfigError
    from autopetl.store import StoreError, open_store, safe_url

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    selection = (
        "trial"
        if args.trial is not None
        else "best"
        if args.best
        else "best-per-method"
        if args.best_per_method
        else "pareto"
    )
    with open_store(args.db, create=False) as store:
        # A name that is not there is said before torch loads (the evaluation package imports
        # the training pipeline): one line in well under a second.
        search = store.get_search(args.search)
        if search is None:
            raise StoreError(f"no search named {args.search!r}; `autopetl searches` lists them")
        from autopetl.evaluation import (
            configuration_results,
            evaluate_jobs,
            plan_evaluation,
            select_configurations,
        )

        # Every check (search, trials, options) before Ray starts or anything is written.
        trials = select_configurations(store, args.search, selection, args.trial)
        task = search.task
        jobs = plan_evaluation(
            store,
            args.search,
            trials,
            range(args.seeds),
            smoke_test=True if args.smoke_test else None,
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
            precision=args.precision,
            data_root=args.data_root,
            test_size=args.test_size,
            artifacts_dir=args.artifacts,
        )
        use_ray = not args.in_process
        if use_ray:
            from autopetl.search.cluster import connect

            with status("starting Ray"):
                connect(None, database_url=store.url)
        err_console.print(
            f"evaluating {len(trials)} configuration(s) of {args.search} x "
            f"{args.seeds} seed(s): {_trained_on(jobs[0].train_fraction)} -> test"
            + (" (smoke test)" if jobs[0].smoke_test else "")
        )
        failures: list[EvaluationRun] = []
        # In a terminal a progress bar; in a log (rich's bar would write nothing until the end)
        # one line per finished run, as it finishes.
        live = interactive()
        progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
        )
        done = 0
        with progress if live else contextlib.nullcontext():
            bar = progress.add_task("runs", total=len(jobs))

            def on_result(run: EvaluationRun) -> None:
                nonlocal done
                job = run.job
                if run.error is not None:
                    failures.append(run)
                    line = f"trial {job.trial_key} seed {job.seed}: failed ({run.error})"
                else:
                    line = f"trial {job.trial_key} seed {job.seed}: test {_pct(run.test_acc or 0)}%"
                done += 1
                if live:
                    progress.console.print(line)
                    progress.advance(bar)
                else:
                    err_console.print(f"run {done}/{len(jobs)}: {line}", markup=False)

            evaluate_jobs(store, jobs, use_ray=use_ray, on_result=on_result)
        results = configuration_results(store, args.search, [t.trial_key for t in trials])
    if results:
        console.print(results_table(args.search, results))
    console.print(
        f"{len(jobs) - len(failures)} of {len(jobs)} runs recorded"
        + (f", {len(failures)} failed" if failures else "")
    )
    db = f" --db '{safe_url(args.db)}'" if args.db else ""
    console.print("next:")
    # A data-scale search's results are a point of the scale table, not of the VTAB-1k table.
    by = " --by train_fraction" if jobs and jobs[0].train_fraction is not None else ""
    console.print("  " + command(f"report --task {task}{by}{db}"), markup=False)
    # Every run failing is a failed command; some failing still leaves results to look at.
    return 1 if failures and not results else 0
