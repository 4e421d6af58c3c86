"""``autopetl serve``: the chosen configurations over HTTP, one frozen backbone per deployment."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from autopetl.cli._console import console, err_console, status
from autopetl.cli._options import float_in, int_in
from autopetl.cli.store_cmd import add_db_option

if TYPE_CHECKING:
    from autopetl.serving import ServedTask


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the best evaluated configurations over HTTP (Ray Serve)",
        description=(
            "Serve evaluated configurations with Ray Serve: one deployment per frozen backbone, "
            "every task's tunable weights on it, a batch of mixed tasks in one pass. POST "
            "/v1/tasks/TASK/predict with an image; GET /v1/tasks; GET /healthz; the OpenAPI "
            "schema is at /docs (docs/SERVING.md)."
        ),
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--task",
        nargs="+",
        action="extend",  # `--task a b` and `--task a --task b` both serve a and b
        metavar="T",
        help="tasks to serve, each with its best evaluated configuration (every search pooled)",
    )
    which.add_argument("--search", metavar="NAME", help="the best evaluated configuration of NAME")
    which.add_argument(
        "--trial",
        action="append",
        metavar="SEARCH:KEY[=NAME]",
        help="an evaluated trial; repeat it to serve several, and give a NAME to serve two "
        "configurations of one task side by side (/v1/tasks/NAME/predict)",
    )
    p.add_argument("--max-params", type=int, default=None, help="with --task: a parameter budget")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", type=int, default=1, help="replicas per backbone deployment")
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=8,
        help="batch up to this many concurrent requests of a replica into one forward "
        "(@serve.batch; 1: no batching; default 8)",
    )
    p.add_argument(
        "--batch-wait-ms", type=float, default=5.0, help="how long a batch waits to fill"
    )
    p.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body")
    p.add_argument(
        "--max-pixels", type=int, default=4096 * 4096, help="largest width x height of an image"
    )
    p.add_argument("--max-side", type=int, default=8192, help="largest width or height of an image")
    p.add_argument(
        "--max-aspect",
        type=float,
        default=16.0,
        help="largest ratio of an image's longer side to its shorter",
    )
    p.add_argument(
        "--max-queued",
        type=int_in(1, 100_000),
        default=8,
        help="requests that may wait for a backbone replica (per ingress replica); past that, "
        "503 at once, which keeps the served requests' latency short (default 8)",
    )
    p.add_argument(
        "--header-timeout",
        type=float_in(0, 3600, above_low=True),
        default=10.0,
        help="seconds a connection has to send its request headers (default 10)",
    )
    p.add_argument(
        "--body-timeout",
        type=float_in(0, 3600, above_low=True),
        default=30.0,
        help="seconds a request has to send its whole body (default 30)",
    )
    p.add_argument(
        "--request-timeout",
        type=float_in(0, 3600, above_low=True),
        default=60.0,
        help="seconds a request may take once its body is in (default 60)",
    )
    p.add_argument(
        "--max-connections",
        type=int_in(1, 1_000_000),
        default=4096,
        help="open connections, idle or not; past that, 503 and closed (default 4096)",
    )
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="allow artifacts trained on a random-init backbone (smoke tests); refused otherwise",
    )
    add_db_option(p)
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    from autopetl.serving.catalog import ServeError

    if args.replicas < 1:
        raise ServeError(f"--replicas must be at least 1, got {args.replicas}")
    if args.max_batch_size < 1:
        raise ServeError(f"--max-batch-size must be at least 1, got {args.max_batch_size}")
    if not 0 < args.port < 65536:
        raise ServeError(f"--port must be in 1..65535, got {args.port}")
    if args.max_body_mb <= 0 or args.max_pixels < 1 or args.batch_wait_ms < 0:
        raise ServeError("--max-body-mb and --max-pixels must be positive, --batch-wait-ms >= 0")
    if args.max_side < 1 or not args.max_aspect >= 1:
        raise ServeError("--max-side must be positive and --max-aspect at least 1")


def run(args: argparse.Namespace) -> int:
    # The catalog reads the store only: what cannot be served is refused before torch or Ray load.
    from autopetl.serving.catalog import (
        check_servable,
        check_unique,
        for_search,
        for_tasks,
        for_trial,
        parse_trial,
    )
    from autopetl.store import open_store

    _check(args)
    with open_store(args.db, create=False) as store:
        if args.task:
            tasks = for_tasks(store, args.task, args.max_params)
        elif args.search:
            tasks = for_search(store, args.search)
        else:
            tasks = [t for spec in args.trial for t in for_trial(store, *parse_trial(spec))]
        url = store.url
    check_unique(tasks)  # before the heavy imports below, as every refusal here
    check_servable(tasks, allow_random=args.smoke_test)

    from ray import serve

    from autopetl.search.cluster import connect
    from autopetl.serving.app import ServeOptions, build_app, start_serve
    from autopetl.serving.guard import GuardLimits
    from autopetl.serving.images import ImageLimits

    max_bytes = int(args.max_body_mb * 1024 * 1024)
    options = ServeOptions(
        replicas=args.replicas,
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait_ms / 1000.0,
        max_queued=args.max_queued,
        limits=ImageLimits(
            max_bytes, args.max_pixels, max_side=args.max_side, max_aspect=args.max_aspect
        ),
    )
    guard = GuardLimits(
        max_body_bytes=max_bytes,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_connections=args.max_connections,
    )
    application = build_app(tasks, options)
    base = f"http://{args.host}:{args.port}"
    # Ctrl-C and SIGTERM stop the server from here on, also while it starts: the handlers are
    # live before /healthz can first answer.
    with _stop_on_signal() as stoppable:
        with status("starting Ray Serve"), _quiet_reconnect():
            connect(None, database_url=url)
            stoppable.own_the_signals()  # Ray's init put in a SIGTERM handler of its own
            # Serve starts once, with our address; serve.run then reuses that instance (and
            # would otherwise log that "new http_options will not be applied", which is not so).
            start_serve(args.host, args.port, guard, request_timeout_s=args.request_timeout)
            serve.run(application, name="autopetl", route_prefix="/")
        for t in tasks:
            console.print(f"serving {t.key} ({t.task}): {banner(t)}")
            console.print(f"  POST {base}/v1/tasks/{t.key}/predict")
        console.print(f"Ray Serve listening on {base}; API docs at {base}/docs; Ctrl-C stops")
        while True:
            time.sleep(3600)
    return 0


def banner(t: ServedTask) -> str:
    """What is served for a task, with the served seed's own accuracy apart from the mean."""
    seed = "-" if t.seed_test_acc is None else f"{100 * t.seed_test_acc:.1f} %"
    text = f"{t.method} from {t.search}:{t.trial_key}, weights of seed {t.seed} (test acc {seed}"
    if t.test_acc is not None and t.seeds > 1:
        std = t.test_acc_std or 0.0
        text += f"; {100 * t.test_acc:.1f} ± {100 * std:.1f} % over {t.seeds} seeds"
    return text + ")"


class _Stop(Exception):
    """SIGTERM or SIGINT asked the server to stop."""


class _Stoppable:
    """Both stop signals raise :class:`_Stop` while it is installed.

    SIGINT explicitly: a process started in the background by a non-interactive shell inherits
    SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt. And SIGTERM again
    once Ray has started: Ray installs a SIGTERM handler of its own when it starts a local
    instance, which dumps every thread's stack, exits with status 1, and leaves Serve's
    controller and replicas to die with the node a minute later.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.previous = {s: signal.getsignal(s) for s in self.SIGNALS}

    @staticmethod
    def _on_signal(signum: int, frame: object) -> None:
        raise _Stop

    def own_the_signals(self) -> None:
        for s in self.SIGNALS:
            signal.signal(s, self._on_signal)

    def ignore_the_signals(self) -> None:
        for s in self.SIGNALS:  # a second signal must not cut the cleanup
            signal.signal(s, signal.SIG_IGN)

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _stop_on_signal() -> Iterator[_Stoppable]:
    """Run the block until Ctrl-C or SIGTERM, then stop Serve and the Ray instance this command
    started, and exit with status 0 either way.

    Serve's applications are deleted and Ray shut down (a local instance with every process it
    started; a cluster joined with RAY_ADDRESS is only left).
    """
    import ray

    stoppable = _Stoppable()
    stoppable.own_the_signals()
    try:
        yield stoppable
    except (KeyboardInterrupt, _Stop):
        stoppable.ignore_the_signals()
        err_console.print("stopping: shutting down Ray Serve and Ray")
    finally:
        stoppable.ignore_the_signals()
        try:
            if ray.is_initialized():
                _quiet_ray_errors()
                from ray import serve

                serve.shutdown()
        finally:
            ray.shutdown()
            stoppable.restore()
    err_console.print("stopped")


def _quiet_ray_errors() -> None:
    """Leave Ray's "(raylet) Task ServeController.graceful_shutdown failed ... killed by
    ray.kill" out of what we print: Serve's controller kills itself by design when it shuts
    down, and Ray's driver prints that task's error (in raw ANSI colours) from a thread of its
    own. The flag is Ray's, private; ray.util.rpdb sets it to silence the driver the same way.
    Nothing else the driver would print is lost: workers' logs are off (log_to_driver=False)."""
    import ray._private.worker as ray_worker

    if hasattr(ray_worker, "_worker_logs_enabled"):
        ray_worker._worker_logs_enabled = False


class _ReconnectFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Connecting to existing Serve app")


@contextlib.contextmanager
def _quiet_reconnect() -> Iterator[None]:
    """Drop Ray Serve's misleading "Connecting to existing Serve app" line (see run)."""
    logger = logging.getLogger("ray.serve")
    quiet = _ReconnectFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
