"""Shared fixtures: a tiny random-init timm ViT and small generated data, so tests run on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from autopetl.backbones import SMOKE_BACKBONE, BackboneSpec, build_backbone

# Tests never touch the user's cache or database.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_WEIGHTS = SHARED / "weights" / "vit_small_patch14_dinov2.safetensors"

# A tiny ViT: 4 blocks, width 64, 16 patch tokens at 32 px (the same as --smoke-test).
TINY = SMOKE_BACKBONE
# The same with 4 register tokens and layer scale, to check methods on DINOv2-style models.
TINY_REG = BackboneSpec(
    name="vit_small_patch14_reg4_dinov2",
    weights="none",
    img_size=28,
    overrides={"depth": 3, "embed_dim": 48, "num_heads": 2},
)
# A tiny Swin: two stages of two blocks (the second shifted), widths 16 and 32, 4 x 4 windows on an
# 8 x 8 then 4 x 4 patch grid at 32 px, so stage 0 has four windows and a shift mask.
TINY_SWIN = BackboneSpec(
    name="swin_tiny_patch4_window7_224",
    weights="none",
    img_size=32,
    overrides={"embed_dim": 16, "depths": (2, 2), "num_heads": (1, 2), "window_size": 4},
)


@pytest.fixture(autouse=True)
def _isolated_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("AUTOPETL_CACHE", str(base / "cache"))
    monkeypatch.setenv("AUTOPETL_HOME", str(base / "home"))
    monkeypatch.delenv("AUTOPETL_DATA", raising=False)
    monkeypatch.delenv("AUTOPETL_DB", raising=False)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on 2 shared cores: OpenMP's spinning threads make them ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_backbone():
    torch.manual_seed(0)
    return build_backbone(TINY, num_classes=16)


@pytest.fixture
def tiny_swin_backbone():
    torch.manual_seed(0)
    return build_backbone(TINY_SWIN, num_classes=5)


@pytest.fixture
def tiny_reg_backbone():
    torch.manual_seed(0)
    return build_backbone(TINY_REG, num_classes=5)


# --- Database fixtures (autopetl.store): SQLite and, when a server is given, PostgreSQL ---------
# PostgreSQL tests read AUTOPETL_TEST_PG_URL (.ci/services/postgres.sh starts a private server and
# sets it); without it they skip, unless AUTOPETL_REQUIRE_PG=1 (CI), where they fail.
PG_URL_ENV = "AUTOPETL_TEST_PG_URL"


def _pg_unavailable(reason: str) -> None:
    if os.environ.get("AUTOPETL_REQUIRE_PG") == "1":
        pytest.fail(f"AUTOPETL_REQUIRE_PG=1 but {reason}")
    pytest.skip(f"PostgreSQL tests skipped: {reason} (source .ci/services/postgres.sh to run them)")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file database for one test."""
    return f"sqlite:///{tmp_path / 'autopetl.db'}"


@pytest.fixture
def pg_url():
    """A fresh, empty schema in the test PostgreSQL database (dropped afterwards), as a URL.

    The schema is selected with libpq's ``options=-csearch_path=...``, so autopetl's tables and
    Optuna's land there and tests never see each other's rows.
    """
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    base = os.environ.get(PG_URL_ENV)
    if not base:
        _pg_unavailable(f"{PG_URL_ENV} is not set")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, connect_args={"connect_timeout": 5}, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError as exc:
        admin.dispose()
        _pg_unavailable(f"cannot reach the server in {PG_URL_ENV}: {str(exc.orig).splitlines()[0]}")
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database URL, once per backend: one fresh SQLite file, one fresh PostgreSQL schema."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


# --- Ray: one local instance for the whole test session (ray.init costs seconds and ~1 GB) -----
@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs and 2 fake GPUs, shared by every test that runs trials.

    2 CPUs, as many as the machines the suite runs on: each trial's worker imports torch, timm and
    Ray Tune (about 4 s of a core), and with 4 slots every search started 4 of them at once on 2
    cores. Tests of more trials at once ask for fractional CPUs (test_half_gpus_...)."""
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(
        address="local",  # a private instance, never a cluster some `ray start` left behind
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()
