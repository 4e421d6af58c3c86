"""A local Ray instance started by autopetl refuses clients without its token.

Ray's gRPC servers listen on every interface (Ray 2.60 cannot bind them to loopback), so the
instance runs in Ray's token mode with a fresh token only its own processes know.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

DRIVER = textwrap.dedent(
    """
    import os, subprocess, sys
    from autopetl.search.cluster import connect
    import ray

    connect(None, database_url="sqlite://", num_cpus=1)
    print("mode", os.environ["RAY_AUTH_MODE"], len(os.environ.get("RAY_AUTH_TOKEN", "")))
    print("own task", ray.get(ray.remote(lambda: 41 + 1).remote()))
    gcs = ray.get_runtime_context().gcs_address
    intruder = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    # Both intruders at once. Ray retries a refused connection 20 times, a second apart
    # (NUM_REDIS_GET_RETRIES); 3 tries refuse it as surely, in 3 s instead of 20.
    code = f"import ray; ray.init(address={gcs!r}); print('JOINED')"
    runs = {}
    for mode, token in (("disabled", None), ("token", "0" * 64)):
        env = {**intruder, "RAY_AUTH_MODE": mode, "RAY_NUM_REDIS_GET_RETRIES": "3"}
        env.update({"RAY_AUTH_TOKEN": token} if token else {})
        runs[mode] = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for mode, run in runs.items():
        out, err = run.communicate(timeout=120)
        # Refused for its token (Ray's error names token authentication), not merely unreachable.
        print("intruder", mode, run.returncode, "JOINED" in out, "token-auth" in err)
    """
)


def test_a_local_instance_refuses_a_client_without_its_token(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token of the user's to fall back on
    run = subprocess.run(
        [sys.executable, "-c", DRIVER], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert "mode token 64" in lines and "own task 42" in lines, run.stdout
    assert "intruder disabled 1 False True" in lines, run.stdout
    assert "intruder token 1 False True" in lines, run.stdout
    assert not (tmp_path / ".ray").exists()  # the token is written nowhere


def test_the_users_choice_of_mode_is_kept(monkeypatch) -> None:
    from autopetl.search.cluster import local_instance_token

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    local_instance_token()
    assert os.environ["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN" not in os.environ
