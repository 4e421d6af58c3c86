"""The wheel is what `pip install autopetl` gets: every module, the migrations, and the built-in
search spaces, found when installed (not editable) from any folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: setuptools builds in the source tree, and a build/ folder left from an
    # earlier build keeps modules since removed, which would then be in the wheel.
    source = tmp_path_factory.mktemp("source")
    for name in ("autopetl", "search_spaces"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (path,) = out.glob("autopetl-*.whl")
    return path


def test_the_wheel_holds_every_module_and_the_builtin_spaces(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "autopetl").rglob("*")
        if p.is_file() and p.suffix in (".py", ".yaml", ".mako") and "__pycache__" not in p.parts
    }
    assert source - names == set(), "pyproject.toml's package list misses these"
    spaces = {f"autopetl/search_spaces/{p.name}" for p in (REPO / "search_spaces").glob("*.yaml")}
    assert "autopetl/search_spaces/default.yaml" in spaces and spaces <= names
    # Docs and test tools stay out of the library.
    assert not [n for n in names if n.endswith("screenshot.py")]


def test_an_installed_wheel_finds_the_default_space_from_any_folder(wheel, tmp_path) -> None:
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    # -S: no .pth files, so the development checkout's editable install cannot answer instead.
    env = {"PYTHONPATH": f"{target}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    probe = (
        "import autopetl, autopetl.search.space as s; "
        "print(autopetl.__file__); print(s.resolve_space_path('default')); "
        "print(len(s.load_space('default').methods))"
    )
    run = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    module, space, methods = run.stdout.split()
    assert module.startswith(str(target)) and space.startswith(str(target))
    assert int(methods) >= 3
