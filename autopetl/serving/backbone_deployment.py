"""The Ray Serve deployment of one frozen backbone: every task on it, answered in one pass.

Each replica builds the backbone once (:class:`~autopetl.serving.models.SharedBackbone`) and
loads a task's artifact on first use onto a copy that shares the frozen tensors. With
``@serve.batch`` the requests gathered in a batch may belong to any of its tasks: the batch runs
as one :class:`~autopetl.serving.mixed.MixedTaskModel` pass over the tasks it holds, each image
answered by its own task's parameters. (Ray Serve's model multiplexing would split a batch by
task, one pass per task; the ingress therefore routes by backbone, not by model id.) A task whose
artifact cannot be loaded answers 503 with the reason while the others keep serving.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import torch
from ray import serve

from autopetl.serving.catalog import ServedTask


def backbone_deployment(
    max_batch_size: int, batch_wait_timeout_s: float, one_pass: bool = True
) -> Any:
    """The deployment class of one backbone, with its batch size; ``one_pass=False`` runs a
    batch as a pass per task (the way per-model multiplexing ran, kept to measure against)."""

    @serve.deployment
    class Backbone:
        """One frozen backbone per replica; every task's weights on it, run together."""

        def __init__(
            self,
            spec: dict[str, Any],
            backbone_init: dict[str, Any] | None,
            tasks: list[dict[str, Any]],
            threads: int,
        ) -> None:
            from autopetl.serving.models import SharedBackbone

            torch.set_num_threads(max(1, threads))
            self.tasks = {t["key"]: ServedTask(**t) for t in tasks}
            self.shared = SharedBackbone(spec, backbone_init)
            self.loaded: dict[str, Any] = {}
            self._loading: dict[str, asyncio.Task[Any]] = {}
            self._mixed: tuple[tuple[str, ...], Any] | None = None

        async def _model_or_error(self, task: str) -> Any:
            """The task's loaded model, or why it cannot answer (a string)."""
            if task not in self.tasks:
                return f"task {task} is not on this backbone"
            if task in self.loaded:
                return self.loaded[task]
            if task not in self._loading:  # concurrent first requests share one load
                served = self.tasks[task]
                self._loading[task] = asyncio.ensure_future(
                    asyncio.to_thread(self.shared.load, task, served.artifact, served.sha256)
                )
            try:
                model = await self._loading[task]
            except Exception as exc:  # a broken artifact: this task answers 503, others serve
                return f"the weights of task {task} cannot be loaded: {exc}"
            self.loaded[task] = model
            return model

        def _mixed_model(self) -> tuple[dict[str, int], Any]:
            """One MixedTaskModel over every task loaded so far (rebuilt when one is added)."""
            from autopetl.serving.mixed import MixedTaskModel

            keys = tuple(sorted(self.loaded))
            if self._mixed is None or self._mixed[0] != keys:
                models = [self.loaded[k].model for k in keys]
                self._mixed = (keys, MixedTaskModel(self.shared.base, models).eval())
            return {k: i for i, k in enumerate(keys)}, self._mixed[1]

        @staticmethod
        def _top_k(probs: torch.Tensor, k: int) -> dict[str, Any]:
            values, index = probs.topk(k)
            return {"top_k": [(int(i), float(v)) for i, v in zip(index, values, strict=True)]}

        async def predict(self, task: str, image: np.ndarray, k: int) -> dict[str, Any]:
            if max_batch_size > 1:
                # serve.batch turns the list signature below into a per-item call.
                probs = await self._batched(task, image)  # type: ignore[call-arg,misc]
            else:
                model = await self._model_or_error(task)
                probs = (
                    model
                    if isinstance(model, str)
                    else self.shared.predict(model, torch.from_numpy(image)[None])[0]
                )
            if isinstance(probs, str):
                return {"error": probs}
            return self._top_k(probs, k)

        @serve.batch(  # type: ignore[arg-type]  # Ray's stubs do not model methods with 2 lists
            max_batch_size=max(1, max_batch_size), batch_wait_timeout_s=batch_wait_timeout_s
        )
        async def _batched(self, tasks: list[str], images: list[np.ndarray]) -> list[Any]:  # type: ignore[misc]
            # One pass for every task in the batch (autopetl/serving/mixed.py).
            out: list[Any] = [None] * len(tasks)
            ready: list[int] = []
            for i, task in enumerate(tasks):
                model = await self._model_or_error(task)
                if isinstance(model, str):
                    out[i] = model
                else:
                    ready.append(i)
            if ready and not one_pass:
                by_task: dict[str, list[int]] = {}
                for i in ready:
                    by_task.setdefault(tasks[i], []).append(i)
                for task, rows in by_task.items():
                    batch = torch.from_numpy(np.stack([images[i] for i in rows]))
                    for i, p in zip(
                        rows, self.shared.predict(self.loaded[task], batch), strict=True
                    ):
                        out[i] = p
            elif ready:
                index, mixed = self._mixed_model()
                probs = self.shared.predict_mixed(
                    mixed,
                    torch.from_numpy(np.stack([images[i] for i in ready])),
                    torch.tensor([index[tasks[i]] for i in ready]),
                )
                for row, i in enumerate(ready):
                    out[i] = probs[row]
            return out

        async def memory(self) -> dict[str, Any]:
            return self.shared.memory(list(self.loaded.values()))

    return Backbone
