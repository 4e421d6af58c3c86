"""End to end: smoke-train and evaluate two dSprites tasks, serve both on one backbone over real
HTTP on 127.0.0.1, and check the served prediction equals the offline model's on the same image.

The "search" of each task is ``autopetl train --smoke-test``, which records a one-trial search
(the quickest path to an evaluated configuration); ``autopetl evaluate`` re-trains it and saves
its artifact, which ``autopetl serve --task`` finds through the store.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from autopetl.cli import main
from autopetl.methods.io import load_tunable
from autopetl.serving.app import public_backbone
from autopetl.serving.catalog import for_tasks
from autopetl.store import open_store
from autopetl.tasks import get_task, load_split
from autopetl.tasks.data import normalize, resize_uint8

pytestmark = pytest.mark.slow

TASKS = {"vtab/dsprites_loc": "vpt", "vtab/dsprites_ori": "dvpt"}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    root = tmp_path_factory.mktemp("serve-e2e")
    db = f"sqlite:///{root / 'autopetl.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOPETL_CACHE", str(base / "cache"))
        mp.setenv("AUTOPETL_HOME", str(base / "home"))
        mp.delenv("AUTOPETL_DATA", raising=False)
        mp.delenv("AUTOPETL_DB", raising=False)
        torch.set_num_threads(1)
        for task, method in TASKS.items():
            name = f"s-{method}"
            argv = ["train", "--task", task, "--method", method, "--smoke-test", "--epochs", "1"]
            assert main([*argv, "--name", name, "--db", db]) == 0
            argv = ["evaluate", "--search", name, "--best", "--seeds", "1", "--smoke-test"]
            argv += ["--test-size", "64", "--in-process", "--db", db]
            assert main([*argv, "--artifacts", str(root / "artifacts")]) == 0
    return db


@pytest.fixture(scope="module")
def server(ray_session, evaluated):
    from ray import serve

    from autopetl.serving.app import ServeOptions, build_app, start_serve
    from autopetl.serving.guard import GuardLimits

    with open_store(evaluated) as store:
        tasks = for_tasks(store, list(TASKS))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start_serve("127.0.0.1", port, GuardLimits())
    serve.run(build_app(tasks, ServeOptions(max_batch_size=4)), name="e2e", route_prefix="/")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client, tasks
    serve.shutdown()


def _test_image(task: str) -> bytes:
    """A real test image of the task at 64 px, as PNG (serving resizes it to 32 px)."""
    split = load_split(get_task(task), "val200", img_size=64, seed=0)
    arr = split.images[0].permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def _offline(artifact: str, png: bytes) -> torch.Tensor:
    """The offline model: load_tunable (backbone rebuilt from the artifact) and the same
    preprocessing as training data (antialiased bilinear resize, the backbone's mean and std)."""
    model = load_tunable(artifact).model.eval()
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    x = resize_uint8(torch.from_numpy(img.copy()).permute(2, 0, 1)[None], 32)
    with torch.no_grad():
        return torch.softmax(model(normalize(x, (0.5,) * 3, (0.5,) * 3)), -1)[0]


def test_concurrent_requests_of_both_tasks_are_answered_in_mixed_batches(server) -> None:
    """Requests of the VPT and the DVPT task at once: a replica's batch holds both tasks and
    runs as one pass (mixed.py); every answer is still its own task's model's."""
    client, tasks = server
    _ask_concurrently(str(client.base_url), tasks)


def test_a_batch_run_as_a_pass_per_task_gives_the_same_answers(server) -> None:
    """``one_pass=False`` (what benchmarks/serve_load.py --tasks measures the one pass against)
    splits each batch by task, and answers the same."""
    from ray import serve

    from autopetl.serving.app import ServeOptions, build_app

    client, tasks = server
    options = ServeOptions(max_batch_size=4, one_pass=False)
    serve.run(build_app(tasks, options), name="e2e-per-task", route_prefix="/per-task")
    try:
        _ask_concurrently(str(client.base_url).rstrip("/") + "/per-task", tasks)
    finally:
        serve.delete("e2e-per-task")


def test_two_configurations_of_one_task_are_served_under_their_own_names(server, evaluated):
    """``serve --trial S:K=NAME``: one trial under two names beside the other task; without
    names the second configuration of a task is refused, and the refusal says how to name it."""
    from ray import serve

    from autopetl.serving.app import ServeOptions, build_app
    from autopetl.serving.catalog import ServeError, for_trial, group_by_backbone, parse_trial

    client, tasks = server
    loc, ori = sorted(tasks, key=lambda t: t.key)
    with open_store(evaluated) as store:
        named = [
            t
            for spec in (f"{loc.search}:{loc.trial_key}=loc-a", f"{loc.search}:{loc.trial_key}=b")
            for t in for_trial(store, *parse_trial(spec))
        ]
        with pytest.raises(ServeError, match=r"--trial .*=NAME"):
            group_by_backbone(for_trial(store, loc.search, loc.trial_key) * 2)
    assert [t.key for t in named] == ["loc-a", "b"] and named[0].task == loc.task
    with pytest.raises(ServeError, match="NAME is a URL path part"):
        parse_trial("s:1=../x")
    serve.run(build_app([*named, ori], ServeOptions()), name="e2e-named", route_prefix="/named")
    try:
        base = str(client.base_url).rstrip("/") + "/named"
        listed = httpx.get(f"{base}/v1/tasks", timeout=60).json()["tasks"]
        assert sorted(t["task"] for t in listed) == ["b", "dsprites_ori", "loc-a"]
        _ask_concurrently(base, [*named, ori])
        # The full name is ambiguous with two configurations of its task: a 404 naming both.
        png = _test_image(loc.task)
        r = httpx.post(f"{base}/v1/tasks/{loc.task}/predict", content=png,
                       headers={"content-type": "image/png"}, timeout=60)  # fmt: skip
        assert r.status_code == 404 and "b, dsprites_ori, loc-a" in r.json()["detail"]
    finally:
        serve.delete("e2e-named")


def _ask_concurrently(base_url: str, tasks: list) -> None:
    from concurrent.futures import ThreadPoolExecutor

    cases = [(t, _test_image(t.task)) for t in tasks]
    expected = {t.key: _offline(t.artifact, png) for t, png in cases}

    def ask(case: tuple) -> tuple[str, dict]:
        served, png = case
        with httpx.Client(base_url=base_url, timeout=60) as own:
            r = own.post(
                f"/v1/tasks/{served.key}/predict",
                params={"k": served.num_classes},
                content=png,
                headers={"content-type": "image/png"},
            )
        assert r.status_code == 200, r.text
        return served.key, r.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, cases * 8))
    for key, body in answers:
        got = torch.zeros(len(expected[key]))
        for entry in body["top_k"]:
            got[entry["label"]] = entry["probability"]
        torch.testing.assert_close(got, expected[key], rtol=0, atol=1e-5)


def test_two_tasks_on_one_backbone_match_the_offline_models(server) -> None:
    client, tasks = server
    assert client.get("/healthz").json() == {"status": "ok", "tasks": 2, "backbones": 1}
    listed = {t["task"]: t for t in client.get("/v1/tasks").json()["tasks"]}
    assert {k: v["method"] for k, v in listed.items()} == {
        "dsprites_loc": "vpt",
        "dsprites_ori": "dvpt",
    }
    assert len({t["deployment"] for t in listed.values()}) == 1  # one frozen backbone
    for served in tasks:
        png = _test_image(served.task)
        expected = _offline(served.artifact, png)
        k = served.num_classes
        r = client.post(
            f"/v1/tasks/{served.key}/predict",
            params={"k": k},
            content=png,
            headers={"content-type": "image/png"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["task"] == served.key and len(body["top_k"]) == k
        got = torch.zeros(k)
        for entry in body["top_k"]:
            got[entry["label"]] = entry["probability"]
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        assert body["top_k"][0]["label"] == int(expected.argmax())
        # Multipart gives the same answer.
        r2 = client.post(
            f"/v1/tasks/{served.key}/predict",
            params={"k": 3},
            files={"file": ("x.png", png, "image/png")},
        )
        assert r2.status_code == 200 and r2.json()["top_k"] == body["top_k"][:3]
        # The CLI's full task name (vtab/dsprites_loc) reaches the same task.
        r3 = client.post(
            f"/v1/tasks/{served.task}/predict",
            params={"k": k},
            content=png,
            headers={"content-type": "image/png"},
        )
        assert r3.status_code == 200 and r3.json() == body
    unknown = client.post("/v1/tasks/vtab/dtd/predict", content=png)
    assert unknown.status_code == 404
    assert "dsprites_loc, dsprites_ori" in unknown.json()["detail"]
    # Clients see the backbone's weights by name, never a path on the server.
    for served in tasks:
        assert listed[served.key]["backbone"] == public_backbone(served.backbone)
        assert listed[served.key]["seed_test_acc"] == served.seed_test_acc
    memory = client.get("/v1/backbones/memory").json()
    (stats,) = memory.values()
    assert stats["tasks"] == 2 and stats["saved_bytes"] > 0
    assert stats["without_sharing_bytes"] > stats["total_bytes"]


def test_serve_cli_refuses_random_weights_without_smoke_test(evaluated, capsys) -> None:
    assert main(["serve", "--task", "dsprites_loc", "--db", evaluated]) == 2
    assert "--smoke-test" in capsys.readouterr().err
    assert main(["serve", "--task", "vtab/dtd", "--smoke-test", "--db", evaluated]) == 2
    assert "no evaluated configuration" in capsys.readouterr().err
    assert main(["serve", "--trial", "nocolon", "--smoke-test", "--db", evaluated]) == 2


def test_public_backbone_names_the_weights_file_not_its_path() -> None:
    spec = {"name": "vit_small_patch14_dinov2", "weights": "/srv/models/secret/vits14.safetensors"}
    assert public_backbone({**spec, "img_size": 224}) == {
        "name": "vit_small_patch14_dinov2",
        "weights": "vits14.safetensors",
        "img_size": 224,
    }
    assert public_backbone({"name": "t", "weights": "none"})["weights"] == "none"
    assert public_backbone({"name": "t", "weights": "hub"})["weights"] == "hub"


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, their children...), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_command_stops_cleanly_on_sigterm_and_ctrl_c(evaluated, tmp_path, stop) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["serve", "--task", "vtab/dsprites_loc", "--smoke-test", "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autopetl", *argv, "--db", evaluated],
            stdout=out,
            stderr=subprocess.STDOUT,
            # Ray's token mode, as a user gets it: Serve's HTTP stays open to clients.
            env={
                k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))
            },
            # As `autopetl serve &` from a script: the shell starts it with SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        # The signal goes as soon as /healthz first answers: the handlers must be live by then
        # (a SIGINT 1 s after it once went unheard, and the server ran on).
        deadline = time.monotonic() + 180
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while True:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/healthz").status_code == 200:
                        break
                time.sleep(0.2)
        started = _descendants(proc.pid)
        assert started, "the server started no Ray processes?"
        proc.send_signal(stop)
        assert proc.wait(timeout=90) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    if "Ctrl-C stops" in text:  # the banner, when the signal came after it
        with open_store(evaluated) as store:
            (served,) = for_tasks(store, ["vtab/dsprites_loc"])
        # The banner names the served seed's own accuracy.
        seed = f"weights of seed {served.seed} (test acc {100 * served.seed_test_acc:.1f} %)"
        assert seed in text
    assert "Connecting to existing Serve app" not in text
    assert "Traceback" not in text and "stopped" in text
    # Ray's noise of a clean shutdown stays out, raw ANSI colours and all.
    assert "graceful_shutdown" not in text and "\x1b[" not in text, text
    # Ray's own processes (GCS, raylet, Serve's controller, proxy and replicas) are gone.
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in started if _alive(p)], text
