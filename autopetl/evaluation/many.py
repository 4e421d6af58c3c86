"""Many runs, on Ray tasks or in this process; the driver records each as it ends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from autopetl.errors import ConfigError
from autopetl.evaluation.jobs import EvaluationJob, EvaluationRun
from autopetl.recording import record_run

if TYPE_CHECKING:
    from autopetl.store import Store

from autopetl.evaluation.run import load_train_split, run_job


# -- many runs ----------------------------------------------------------------------------------
def _failed(job: EvaluationJob, exc: BaseException) -> EvaluationRun:
    lines = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    return EvaluationRun(job, None, {"error": message, "seed": job.seed}, error=message)


def evaluate_jobs(
    store: Store,
    jobs: Sequence[EvaluationJob],
    *,
    use_ray: bool = True,
    on_result: Callable[[EvaluationRun], None] | None = None,
) -> list[EvaluationRun]:
    """Run the jobs (in parallel on Ray, or one by one here) and record each as it finishes.

    With ``use_ray`` Ray must be initialised (:func:`autopetl.search.cluster.connect`); the
    train800val200 tensors are loaded once here and shared through Ray's object store. A run that
    fails is recorded with ``test_acc`` None and its error, and the others go on.

    Returns:
        The runs, in the order they finished.
    """
    if use_ray:
        import ray

        if not ray.is_initialized():
            raise ConfigError("Ray is not running: call autopetl.search.cluster.connect first")
    trains: dict[tuple[Any, ...], Any] = {}

    def train_of(job: EvaluationJob) -> Any:
        key = (
            job.task,
            job.backbone["img_size"],
            job.train_limit,
            job.data_root,
            job.train_fraction,
        )
        if key not in trains:
            data = load_train_split(job)
            trains[key] = ray.put(data) if use_ray else data
        return trains[key]

    runs: list[EvaluationRun] = []

    def finish(run: EvaluationRun) -> None:
        record_run(store, run)
        runs.append(run)
        if on_result is not None:
            on_result(run)

    if not use_ray:
        for job in jobs:
            try:
                run = run_job(job, train_of(job))
            except Exception as exc:  # recorded as a failed run; the next configuration goes on
                run = _failed(job, exc)
            finish(run)
        return runs

    remote = ray.remote(run_job)
    pending = {
        remote.options(num_cpus=job.cpus, num_gpus=job.gpus, max_retries=0).remote(  # type: ignore[call-arg]
            job, train_of(job)
        ): job
        for job in jobs
    }
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            job = pending.pop(ref)
            try:
                run = ray.get(ref)
            except Exception as exc:  # a worker's error; keep the other runs going
                run = _failed(job, exc)
            finish(run)
    return runs
