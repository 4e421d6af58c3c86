"""``autopetl serve`` against a corpus of malformed requests, over real HTTP on 127.0.0.1.

Every bad request must get a 4xx with a JSON error (never a 5xx), the server must keep answering
valid requests afterwards, and a task whose artifact is broken answers 503 while the other task
serves. Artifacts are written directly (no training) to keep the module fast.
"""

from __future__ import annotations

import io
import socket
import struct
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image

from autopetl.methods import build_method
from autopetl.methods.io import (
    WEIGHTS_FILE,
    backbone_init_record,
    file_sha256,
    rebuildable_backbone,
    save_tunable,
)
from autopetl.pipeline import attach
from autopetl.serving.catalog import ServedTask
from autopetl.serving.images import ImageLimits

from .conftest import TINY

MAX_BYTES = 64 * 1024
MAX_PIXELS = 512 * 512


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _artifact(root: Path, name: str, method: str, classes: int) -> ServedTask:
    base = rebuildable_backbone(TINY, classes)
    init = backbone_init_record(TINY, base)
    m = build_method(method)
    path = save_tunable(
        attach(base, m, seed=0), m, TINY.to_dict(), classes, root / name, backbone_init=init
    )
    return ServedTask(
        key=name,
        task=f"vtab/{name}",
        num_classes=classes,
        search="handmade",
        trial_key="0",
        method=method,
        config={"method": method},
        seed=0,
        seed_test_acc=None,
        test_acc=None,
        test_acc_std=None,
        seeds=1,
        tunable_params=None,
        artifact=str(path),
        sha256=file_sha256(path / WEIGHTS_FILE),
        backbone=TINY.to_dict(),
        backbone_init=init,
    )


@pytest.fixture(scope="module")
def server(ray_session, tmp_path_factory):
    from ray import serve

    from autopetl.serving.app import ServeOptions, build_app, start_serve
    from autopetl.serving.guard import GuardLimits

    root = tmp_path_factory.mktemp("serve-bad")
    good = _artifact(root, "dsprites_loc", "bias", 16)
    broken = _artifact(root, "dsprites_ori", "vpt", 40)
    # Damage the weights after the store recorded their digest.
    weights = Path(broken.artifact) / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    port = free_port()
    start_serve("127.0.0.1", port, GuardLimits(max_body_bytes=MAX_BYTES))
    options = ServeOptions(limits=ImageLimits(max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS))
    serve.run(build_app([good, broken], options), name="bad-inputs", route_prefix="/")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client
    serve.shutdown()


def _img(fmt: str = "PNG", size: tuple[int, int] = (32, 32), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, format=fmt)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge canvas (a decompression bomb's first bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _multipart(fields: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = "autopetlboundary"
    parts = []
    for name, (filename, data, ctype) in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


PNG = _img()
LOC = "/v1/tasks/dsprites_loc/predict"


def _corpus() -> list[tuple[str, dict, set[int]]]:
    """(name, request kwargs, accepted statuses): at least 15 kinds of bad request."""
    png_ct = {"content-type": "image/png"}
    text_form, text_ct = _multipart({"file": ("a.txt", b"hello", "text/plain")})
    other_form, other_ct = _multipart({"image": ("a.png", PNG, "image/png")})
    return [
        ("empty body", dict(content=b"", headers=png_ct), {400}),
        ("not an image", dict(content=b"hello world" * 10, headers=png_ct), {400}),
        ("truncated png", dict(content=PNG[: len(PNG) // 2], headers=png_ct), {400}),
        (
            "truncated jpeg",
            dict(content=_img("JPEG")[:300], headers={"content-type": "image/jpeg"}),
            {400},
        ),
        ("png header only", dict(content=PNG[:8], headers=png_ct), {400}),
        ("body too large", dict(content=b"\0" * (MAX_BYTES + 1), headers=png_ct), {413}),
        ("decompression bomb", dict(content=_png_claiming(50_000, 50_000), headers=png_ct), {413}),
        ("too many pixels", dict(content=_img(size=(600, 600), mode="L"), headers=png_ct), {413}),
        ("tiff refused", dict(content=_img("TIFF"), headers={"content-type": "image/png"}), {415}),
        (
            "content type tiff",
            dict(content=_img("TIFF"), headers={"content-type": "image/tiff"}),
            {415},
        ),
        (
            "svg",
            dict(
                content=b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                headers={"content-type": "image/svg+xml"},
            ),
            {415},
        ),
        ("wrong content type", dict(content=PNG, headers={"content-type": "text/plain"}), {415}),
        (
            "json content type",
            dict(content=b'{"image": 1}', headers={"content-type": "application/json"}),
            {415},
        ),
        ("no content type", dict(content=PNG, headers={"content-type": ""}), {415}),
        ("unknown task", dict(url="/v1/tasks/nope/predict", content=PNG, headers=png_ct), {404}),
        (
            "task path traversal",
            dict(url="/v1/tasks/..%2F..%2Fetc/predict", content=PNG, headers=png_ct),
            {404},
        ),
        ("k zero", dict(url=LOC + "?k=0", content=PNG, headers=png_ct), {422}),
        ("k negative", dict(url=LOC + "?k=-3", content=PNG, headers=png_ct), {422}),
        ("k not a number", dict(url=LOC + "?k=abc", content=PNG, headers=png_ct), {422}),
        ("k too large", dict(url=LOC + "?k=100000", content=PNG, headers=png_ct), {422}),
        (
            "multipart without file",
            dict(content=other_form, headers={"content-type": other_ct}),
            {400},
        ),
        ("multipart with text", dict(content=text_form, headers={"content-type": text_ct}), {400}),
        (
            "multipart no boundary",
            dict(content=b"--x\r\n\r\n", headers={"content-type": "multipart/form-data"}),
            {400},
        ),
        (
            "multipart garbage",
            dict(content=b"garbage", headers={"content-type": "multipart/form-data; boundary=zz"}),
            {400},
        ),
        (
            "bad content length",
            dict(content=PNG, headers={**png_ct, "content-length": "abc"}),
            {400},
        ),
        ("GET on predict", dict(method="GET", content=None, headers={}), {405}),
        ("unknown route", dict(url="/v2/nothing", content=PNG, headers=png_ct), {404}),
    ]


def test_every_malformed_request_is_a_json_4xx(server: httpx.Client) -> None:
    corpus = _corpus()
    assert len(corpus) >= 15
    failures = []
    for name, kwargs, statuses in corpus:
        kwargs = dict(kwargs)
        method = kwargs.pop("method", "POST")
        url = kwargs.pop("url", LOC)
        headers = {k: v for k, v in kwargs.pop("headers").items() if v}
        try:
            r = server.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:  # e.g. a bad Content-Length the client itself refuses
            if name == "bad content length":
                continue
            raise AssertionError(f"{name}: {exc}") from exc
        ok = r.status_code in statuses and r.headers["content-type"].startswith("application/json")
        body = r.json() if ok else None
        if not ok or "detail" not in body:
            failures.append(f"{name}: {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)
    # The server still answers valid requests, raw and multipart.
    r = server.post(LOC + "?k=3", content=PNG, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    top = r.json()["top_k"]
    assert len(top) == 3 and abs(sum(x["probability"] for x in top)) <= 1.0 + 1e-6
    form, ctype = _multipart({"file": ("a.jpg", _img("JPEG", (50, 40)), "image/jpeg")})
    r = server.post(LOC, content=form, headers={"content-type": ctype})
    assert r.status_code == 200 and len(r.json()["top_k"]) == 5, r.text
    for fmt in ("WEBP", "GIF", "BMP"):
        r = server.post(LOC + "?k=100", content=_img(fmt), headers={"content-type": "image/png"})
        assert r.status_code == 200 and len(r.json()["top_k"]) == 16, (fmt, r.text)


def test_a_broken_artifact_is_a_503_for_its_task_only(server: httpx.Client) -> None:
    r = server.post(
        "/v1/tasks/dsprites_ori/predict", content=PNG, headers={"content-type": "image/png"}
    )
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "task_unavailable" and "SHA-256" in r.json()["detail"]
    r = server.post(LOC, content=PNG, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert server.get("/healthz").json() == {"status": "ok", "tasks": 2, "backbones": 1}
    listed = {t["task"]: t for t in server.get("/v1/tasks").json()["tasks"]}
    assert set(listed) == {"dsprites_loc", "dsprites_ori"}
    assert listed["dsprites_loc"]["method"] == "bias"
    assert listed["dsprites_loc"]["deployment"] == listed["dsprites_ori"]["deployment"]


def test_openapi_describes_the_api(server: httpx.Client) -> None:
    spec = server.get("/openapi.json").json()
    predict = spec["paths"]["/v1/tasks/{task}/predict"]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert "image/png" in predict["requestBody"]["content"]
    assert {"200", "400", "404", "413", "415", "422", "503"} <= set(predict["responses"])
    ok = predict["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/PredictResponse")
    assert spec["paths"]["/v1/tasks"]["get"]["responses"]["200"]["content"]
