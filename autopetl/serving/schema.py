"""The HTTP schema of ``autopetl serve``: the JSON bodies it answers and the OpenAPI parts of the
predict route (its request body and its error answers), as FastAPI documents them at ``/docs``."""

# Real annotations (no `from __future__ import annotations`): pydantic and FastAPI read them.

from typing import Any

from pydantic import BaseModel, Field

from autopetl.serving.images import ALLOWED_CONTENT_TYPES


class ErrorResponse(BaseModel):
    error: str = Field(description="a short machine-readable code, e.g. invalid_image")
    detail: str = Field(description="what was wrong and how to fix it")


class LabelScore(BaseModel):
    label: int = Field(description="the class index of the task")
    probability: float


class PredictResponse(BaseModel):
    task: str
    method: str
    top_k: list[LabelScore]


class TaskInfo(BaseModel):
    task: str = Field(description="the name in URLs")
    full_name: str
    num_classes: int
    method: str
    config: dict[str, Any]
    search: str
    trial_key: str
    seed: int = Field(description="the evaluation seed whose weights are served")
    seed_test_acc: float | None = Field(description="that seed's own test accuracy")
    test_acc: float | None = Field(description="mean test accuracy over the evaluated seeds")
    test_acc_std: float | None
    seeds: int
    tunable_params: int | None
    backbone: dict[str, Any] = Field(
        description="model name, input size and weights (a file's name, never its path on the server)"
    )
    deployment: str


class TaskList(BaseModel):
    tasks: list[TaskInfo]


class Health(BaseModel):
    status: str
    tasks: int
    backbones: int


IMAGE_SCHEMA = {"type": "string", "format": "binary"}
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": "the image: raw bytes with an image content type, or a multipart form "
        "with the field `file`",
        "content": {
            **{ct: {"schema": IMAGE_SCHEMA} for ct in sorted(ALLOWED_CONTENT_TYPES)},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": IMAGE_SCHEMA},
                    "required": ["file"],
                }
            },
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "not an image, truncated, empty, or a malformed form",
        404: "unknown task",
        413: "body or pixel count over the limit",
        415: "content type or image format not accepted",
        422: "bad query parameter (k)",
        503: "the task's weights cannot be loaded, or the server is at capacity (retry)",
    }.items()
}
