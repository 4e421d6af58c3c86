"""What to serve: each task's chosen configuration and its artifact, found through the store.

Three ways to choose, as ``autopetl serve`` offers them:

- by task (:func:`for_tasks`): :func:`autopetl.evaluation.best_configuration`, the best mean test
  accuracy over every evaluated configuration of the task, from every search;
- by search (:func:`for_search`): that search's best evaluated configuration;
- by trial (:func:`for_trial`): one evaluated trial of a search.

A configuration was evaluated with one or more seeds, each with its own artifact; the lowest
seed's is served (choosing the luckiest seed by its test accuracy would be selecting on test).
The artifact's path and SHA-256 come from ``autopetl_artifacts``; serving checks the digest.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from autopetl.errors import AutopetlError

if TYPE_CHECKING:
    from autopetl.evaluation import ConfigurationResult
    from autopetl.store import Store


class ServeError(AutopetlError):
    """Nothing to serve: no evaluated configuration, no artifact, a bad option."""


@dataclass(frozen=True)
class ServedTask:
    """One served task: its URL name, configuration and artifact (small and picklable).

    Attributes:
        key: The name in URLs (``dsprites_loc`` for ``vtab/dsprites_loc``).
        task: The task's full name.
        num_classes: Labels of the task.
        search: The search the configuration comes from.
        trial_key: Its trial.
        method: The PETL method.
        config: The trial's config (method options and training hyper-parameters).
        seed: The evaluation seed whose artifact is served.
        seed_test_acc: That seed's own test accuracy (None if unknown).
        test_acc: Mean test accuracy over the evaluated seeds (None if unknown).
        test_acc_std: Its standard deviation over seeds.
        seeds: How many seeds were evaluated.
        tunable_params: Tunable parameters, head included.
        artifact: The artifact directory.
        sha256: SHA-256 of its ``tunable.safetensors`` as recorded (None: not checked).
        backbone: ``BackboneSpec.to_dict()``.
        backbone_init: A random-init backbone's seed and digest, from the artifact (else None).
    """

    key: str
    task: str
    num_classes: int
    search: str
    trial_key: str
    method: str
    config: dict[str, Any]
    seed: int
    seed_test_acc: float | None
    test_acc: float | None
    test_acc_std: float | None
    seeds: int
    tunable_params: int | None
    artifact: str
    sha256: str | None
    backbone: dict[str, Any]
    backbone_init: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def task_key(task: str) -> str:
    """``vtab/dsprites_loc`` -> ``dsprites_loc``: a name without a slash, for URLs."""
    return task.rsplit("/", 1)[-1]


def served_task(store: Store, result: ConfigurationResult) -> ServedTask:
    """The served form of an evaluated configuration: its lowest seed's artifact."""
    from autopetl.methods.artifact_meta import read_meta
    from autopetl.tasks import get_task

    if not result.artifacts:
        raise ServeError(
            f"configuration {result.search_name}:{result.trial_key} has no saved weights; "
            f"run `autopetl evaluate --search {result.search_name} --trial {result.trial_key}`"
        )
    seed = min(result.artifacts)
    path = result.artifacts[seed]
    digests = {a.kind: a.sha256 for a in store.artifacts(result.search_name, result.trial_key)}
    try:
        init = read_meta(path).get("backbone_init")
    except AutopetlError:
        init = None  # a broken artifact: serving answers 503 for this task, the others serve
    mean = result.mean if math.isfinite(result.mean) else None
    own = dict(zip(result.seeds, result.test_accs, strict=True)).get(seed)
    return ServedTask(
        key=task_key(result.task),
        task=result.task,
        num_classes=get_task(result.task).num_classes,
        search=result.search_name,
        trial_key=result.trial_key,
        method=result.method,
        config=dict(result.config),
        seed=seed,
        seed_test_acc=own if own is not None and math.isfinite(own) else None,
        test_acc=mean,
        test_acc_std=result.std if mean is not None else None,
        seeds=len(result.seeds),
        tunable_params=result.tunable_params,
        artifact=str(path),
        sha256=digests.get(f"weights-seed{seed}"),
        backbone=dict(result.backbone),
        backbone_init=init if isinstance(init, dict) else None,
    )


def for_tasks(store: Store, tasks: list[str], max_params: int | None = None) -> list[ServedTask]:
    """Each task's best evaluated configuration (every search of the task pooled)."""
    from autopetl.evaluation import best_configuration
    from autopetl.tasks import get_task

    out: dict[str, ServedTask] = {}
    for name in tasks:
        task = get_task(name)
        best = best_configuration(store, task.name, max_params)
        if best is None:
            raise ServeError(
                f"no evaluated configuration of {task.name}"
                + (f" with at most {max_params} parameters" if max_params is not None else "")
                + "; run `autopetl evaluate --search NAME` on one of its searches first"
            )
        out[task.name] = served_task(store, best)
    return list(out.values())


def for_search(store: Store, search: str) -> list[ServedTask]:
    """The best evaluated configuration of one search."""
    from autopetl.evaluation import configuration_results, rank_key

    results = configuration_results(store, search)  # raises on an unknown search
    if not results:
        raise ServeError(
            f"search {search!r} has no evaluated configuration; "
            f"run `autopetl evaluate --search {search}` first"
        )
    return [served_task(store, min(results, key=rank_key))]


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def parse_trial(spec: str) -> tuple[str, str, str | None]:
    """``SEARCH:KEY[=NAME]`` (serve's ``--trial``) as (search, trial key, URL name or None)."""
    where, eq, name = spec.partition("=")
    search, sep, key = where.rpartition(":")
    if not sep or not search or not key or (eq and not name):
        raise ServeError(f"--trial expects SEARCH:KEY or SEARCH:KEY=NAME, got {spec!r}")
    if eq and not _NAME.fullmatch(name):
        raise ServeError(
            f"--trial {spec!r}: NAME is a URL path part: letters, digits, '_', '.', '-' "
            "(at most 64), starting with a letter or digit"
        )
    return search, key, name or None


def for_trial(
    store: Store, search: str, trial_key: str, name: str | None = None
) -> list[ServedTask]:
    """One evaluated trial of a search, served as ``name`` (default: its task's key)."""
    from autopetl.evaluation import configuration_results

    results = configuration_results(store, search, [trial_key])
    if not results:
        raise ServeError(
            f"trial {trial_key!r} of search {search!r} has no evaluation; run "
            f"`autopetl evaluate --search {search} --trial {trial_key}` first"
        )
    served = served_task(store, results[0])
    return [dataclasses.replace(served, key=name) if name else served]


def group_by_backbone(tasks: list[ServedTask]) -> dict[str, list[ServedTask]]:
    """Tasks grouped by backbone spec: one deployment (one frozen backbone) per group.

    Raises:
        ServeError: Two configurations of the same task (one URL cannot serve both).
    """
    import json

    from autopetl.serving.models import backbone_key

    check_unique(tasks)
    groups: dict[str, list[ServedTask]] = {}
    for t in tasks:
        groups.setdefault(backbone_key(json.loads(json.dumps(t.backbone))), []).append(t)
    return groups


def check_unique(tasks: list[ServedTask]) -> None:
    """Refuse two configurations under one name (one URL cannot serve both); no torch."""
    seen: dict[str, ServedTask] = {}
    for t in tasks:
        if t.key in seen:
            raise ServeError(
                f"two configurations for task {t.key} ({seen[t.key].search}:"
                f"{seen[t.key].trial_key} and {t.search}:{t.trial_key}); serve one of them, or "
                f"give each its own name: --trial {t.search}:{t.trial_key}=NAME"
            )
        seen[t.key] = t


def check_servable(tasks: list[ServedTask], *, allow_random: bool) -> None:
    """Refuse what must not be served: weights trained on a random-init backbone (their
    predictions mean nothing) unless ``allow_random`` (``--smoke-test``), and a random backbone
    whose artifact does not say how to rebuild it."""
    for t in tasks:
        if t.backbone.get("weights") == "none" and not allow_random:
            raise ServeError(
                f"{t.key} ({t.search}:{t.trial_key}) was trained on a randomly initialised "
                f"backbone: its predictions mean nothing; pass --smoke-test to serve it anyway"
            )
        if t.backbone.get("weights") == "none" and t.backbone_init is None:
            raise ServeError(
                f"{t.key}: the artifact {t.artifact} does not record how to rebuild its random "
                f"backbone (or cannot be read); run `autopetl evaluate --search {t.search} "
                f"--trial {t.trial_key}` again"
            )
