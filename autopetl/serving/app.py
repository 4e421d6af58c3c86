"""The Ray Serve application: a FastAPI ingress and one deployment per frozen backbone.

::

    HTTP -> Ingress (FastAPI: limits, decoding, resizing to the backbone's input)
              |- handle.predict(task, uint8 image, k) of the task's backbone deployment
              v
            Backbone-<spec> deployment (backbone_deployment.py; one frozen backbone per
              |  replica, built once; a task's artifact loaded on first use onto a structural
              |  copy that shares the frozen tensors)
              |- optional @serve.batch: the requests of a batch, of any of its tasks, run as
                 one pass (mixed.py)

Client mistakes are answered by the ingress with 4xx JSON ``{"error": CODE, "detail": TEXT}``;
a task whose artifact cannot be loaded gets 503 with the reason, while other tasks keep serving.
"""

# No `from __future__ import annotations` here: Ray Serve's class-based ingress re-wraps the route
# methods, and FastAPI then cannot resolve string annotations (a `request: Request` parameter
# became a required query parameter). Real annotations are what FastAPI reads.

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from starlette.exceptions import HTTPException as StarletteHTTPException

from autopetl.serving.backbone_deployment import backbone_deployment
from autopetl.serving.catalog import ServedTask, group_by_backbone
from autopetl.serving.guard import GuardLimits, controller_options
from autopetl.serving.images import ImageError, ImageLimits, preprocess
from autopetl.serving.schema import (
    ERRORS,
    PREDICT_BODY,
    Health,
    LabelScore,
    PredictResponse,
    TaskInfo,
    TaskList,
)
from autopetl.serving.uploads import image_bytes

log = logging.getLogger(__name__)

MAX_K = 100
# Seconds a replica has to finish its requests when Serve stops (Ctrl-C, SIGTERM, redeploys).
GRACEFUL_SHUTDOWN_S = 5.0


@dataclass(frozen=True)
class ServeOptions:
    """How the application runs.

    Attributes:
        replicas: Replicas of each backbone deployment (and of the ingress).
        max_batch_size: Above 1, concurrent requests to a replica are batched (``@serve.batch``).
        batch_wait_timeout_s: How long a batch waits to fill.
        one_pass: A batch of mixed tasks runs as one backbone pass (mixed.py). False runs a
            pass per task in the batch, as Ray Serve's per-model multiplexing did: kept to
            measure the one pass against (benchmarks/serve_load.py --tasks).
        backbone_cpus: Ray CPUs per backbone replica (also its torch threads).
        max_queued: Requests that may wait for a backbone replica, per ingress replica, beyond
            the ones it is running; past that a request is answered 503 at once. A bounded queue
            keeps the wait of the requests served short (p99 within a few times p50) instead of
            letting every request wait behind all the others under overload.
        ingress_max_queued: Requests that may wait for an ingress replica; past that, Ray's
            proxy answers 503 (-1: no bound).
        limits: Request limits.
    """

    replicas: int = 1
    # 8: under load one forward serves up to 8 requests; at 50 clients this kept p99 within
    # 1.7x p50 where batch 1 let it reach 4x (docs/SERVING.md, benchmarks/serve_load.py).
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.005
    one_pass: bool = True
    backbone_cpus: float = 1.0
    max_queued: int = 8
    ingress_max_queued: int = 256
    limits: ImageLimits = field(default_factory=ImageLimits)

    @property
    def max_ongoing(self) -> int:
        """Requests a backbone replica runs at once: two batches (one running, one gathering)."""
        return 2 * self.max_batch_size


app = FastAPI(
    title="autopetl serve",
    description="Top-k predictions of PETL models that share one frozen ViT per backbone.",
    version="1",
)


def public_backbone(backbone: dict[str, Any]) -> dict[str, Any]:
    """The backbone as clients may see it: a weights file by its name, not its server path."""
    out = dict(backbone)
    weights = str(out.get("weights", ""))
    if weights not in ("hub", "none", ""):
        out["weights"] = Path(weights).name
    return out


def _error(status: int, code: str, detail: str, *, retry_after: bool = False) -> JSONResponse:
    headers = {"Retry-After": "1"} if retry_after else None
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


@app.exception_handler(ImageError)
async def _image_error(_: Request, exc: ImageError) -> JSONResponse:
    return _error(exc.status, exc.code, exc.detail)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    parts = [
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()
    ]
    return _error(422, "invalid_request", "; ".join(parts) or "invalid request")


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail))


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Ingress:
    """The HTTP front: validates and decodes requests, routes each task to its backbone."""

    def __init__(
        self,
        tasks: list[dict[str, Any]],
        deployments: dict[str, str],
        handles: dict[str, Any],
        limits: dict[str, Any],
        max_queued: int = 8,
    ) -> None:
        self.tasks = {t["key"]: ServedTask(**t) for t in tasks}
        self.deployment_of = deployments  # task key -> deployment name
        self.handles = handles  # deployment name -> DeploymentHandle
        self.limits = ImageLimits(**limits)
        self.max_queued = max_queued

    @app.get("/healthz", response_model=Health)
    async def healthz(self) -> Health:
        return Health(status="ok", tasks=len(self.tasks), backbones=len(self.handles))

    @app.get("/v1/tasks", response_model=TaskList)
    async def list_tasks(self) -> TaskList:
        return TaskList(
            tasks=[
                TaskInfo(
                    task=t.key,
                    full_name=t.task,
                    num_classes=t.num_classes,
                    method=t.method,
                    config=t.config,
                    search=t.search,
                    trial_key=t.trial_key,
                    seed=t.seed,
                    seed_test_acc=t.seed_test_acc,
                    test_acc=t.test_acc,
                    test_acc_std=t.test_acc_std,
                    seeds=t.seeds,
                    tunable_params=t.tunable_params,
                    backbone=public_backbone(t.backbone),
                    deployment=self.deployment_of[t.key],
                )
                for t in self.tasks.values()
            ]
        )

    @app.get("/v1/backbones/memory")
    async def memory(self) -> dict[str, Any]:
        """Bytes held by one replica of each backbone: shared frozen tensors and each task's own."""
        out = {}
        for name, handle in self.handles.items():
            out[name] = await handle.memory.remote()
        return out

    @app.post(
        # :path also matches the CLI's full name (vtab/dsprites_loc), which has a slash.
        "/v1/tasks/{task:path}/predict",
        response_model=PredictResponse,
        responses=ERRORS,
        openapi_extra=PREDICT_BODY,
    )
    async def predict(
        self,
        task: str,
        request: Request,
        k: int = Query(5, ge=1, le=MAX_K, description="labels to return (at most the classes)"),
    ) -> PredictResponse | JSONResponse:
        # A full name (vtab/dsprites_loc) works where one configuration of that task is served;
        # two (serve --trial S:K=NAME) answer only to their names.
        same = [t for t in self.tasks.values() if t.task == task]
        served = self.tasks.get(task) or (same[0] if len(same) == 1 else None)
        if served is None:
            names = ", ".join(sorted(self.tasks)) or "none"
            return _error(
                404,
                "unknown_task",
                f"task {task!r} is not served (served: {names}; the full names, as in "
                "vtab/dsprites_loc, work too); GET /v1/tasks lists them",
            )
        task = served.key
        data = await image_bytes(request, self.limits.max_bytes)
        img_size = int(served.backbone["img_size"])
        # Decoding is CPU work: keep it off the event loop that accepts other requests.
        image = await asyncio.to_thread(preprocess, data, img_size, self.limits)
        name = self.deployment_of[task]
        try:
            # Routed by backbone, not by Serve's model multiplexing (which splits a batch by
            # task): a replica's batch holds requests of all its tasks and runs as one pass.
            result = await self.handles[name].predict.remote(
                task, image.numpy(), min(k, served.num_classes)
            )
        except BackPressureError:
            return _error(
                503,
                "overloaded",
                f"the {name} queue is full ({self.max_queued} waiting); retry in a second",
                retry_after=True,
            )
        except Exception as exc:  # the replica died or the call failed: the task is unavailable
            log.warning("prediction of %s failed: %s", task, exc)
            return _error(503, "task_unavailable", f"task {task} cannot answer now: {exc}")
        if "error" in result:
            return _error(503, "task_unavailable", result["error"])
        return PredictResponse(
            task=task,
            method=served.method,
            top_k=[LabelScore(label=i, probability=p) for i, p in result["top_k"]],
        )


def build_app(tasks: list[ServedTask], options: ServeOptions | None = None) -> Any:
    """The bound Ray Serve application for these tasks (pass it to ``serve.run``)."""
    options = options or ServeOptions()
    groups = group_by_backbone(tasks)
    handles: dict[str, Any] = {}
    deployment_of: dict[str, str] = {}
    for key, group in groups.items():
        name = f"backbone-{key}"
        init = next((t.backbone_init for t in group if t.backbone_init is not None), None)
        cls = backbone_deployment(
            options.max_batch_size, options.batch_wait_timeout_s, options.one_pass
        )
        handles[name] = cls.options(
            name=name,
            num_replicas=options.replicas,
            ray_actor_options={"num_cpus": options.backbone_cpus},
            # Requests wait at the replica so @serve.batch can gather them; the rest wait in the
            # ingress's bounded queue, and past it are answered 503 (BackPressureError).
            max_ongoing_requests=options.max_ongoing,
            max_queued_requests=options.max_queued,
            # A request takes well under a second: 5 s of draining on shutdown, not Ray's 20.
            graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
        ).bind(group[0].backbone, init, [t.to_dict() for t in group], int(options.backbone_cpus))
        for t in group:
            deployment_of[t.key] = name
    # serve.deployment makes the class a Deployment; mypy still sees the class.
    ingress: Any = Ingress
    # The ingress only decodes and waits on backbones (async), and the proxy's guard hands it
    # whole bodies only, so its slots are cheap; its queue is bounded all the same (503 past it).
    return ingress.options(
        num_replicas=options.replicas,
        max_ongoing_requests=256,
        max_queued_requests=options.ingress_max_queued,
        graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
    ).bind(
        [t.to_dict() for t in tasks],
        deployment_of,
        handles,
        asdict(options.limits),
        options.max_queued,
    )


def start_serve(
    host: str, port: int, guard: GuardLimits, request_timeout_s: float | None = 60.0
) -> None:
    """Start Ray Serve's HTTP proxy on ``host:port`` with the request guard installed in it.

    ``request_timeout_s`` bounds a request end to end once its body is in (Ray answers 408,
    the guard makes it JSON). Call once per Ray instance, before :func:`serve.run`.
    """
    serve.start(
        http_options={"host": host, "port": port, "request_timeout_s": request_timeout_s},
        controller_options=controller_options(guard),
    )
