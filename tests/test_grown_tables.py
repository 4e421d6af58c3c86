"""A learning-curve table whose space grew (issue 33, item 6): only the added methods are
recorded, as a search of their own, and the export merges them into the table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _grown_tables import GrowthError, growth, merged_table

from autopetl.search.space import load_space

OLD = (
    "sampler: grid\nmethods:\n  linear: {}\n"
    "train: {lr: {type: categorical, choices: [1.0e-3, 1.0e-1]}, epochs: 2}\n"
)
GROWN = OLD.replace("  linear: {}\n", "  linear: {}\n  vpt: {prompt_length: 1, deep: false}\n")


def _record(space: Path | str, name: str, tmp_path: Path, db: str) -> None:
    from autopetl.cli import main

    args = ["search", "--task", "vtab/dsprites_loc", "--space", str(space), "--budget", "99"]
    args += ["--smoke-test", "--scheduler", "none", "--sampler", "grid", "--name", name]
    assert main([*args, "--db", db, "--storage", str(tmp_path / "ray" / name)]) == 0


@pytest.mark.slow
def test_a_grown_space_records_only_its_new_methods_and_exports_the_whole_table(
    ray_session, tmp_path, sqlite_url
):
    from autopetl.store import open_store

    old, grown_file = tmp_path / "grid.yaml", tmp_path / "grown" / "grid.yaml"
    old.write_text(OLD)
    grown_file.parent.mkdir()
    grown_file.write_text(GROWN)
    _record(old, "table", tmp_path, sqlite_url)
    store = open_store(sqlite_url)
    assert growth(store, "table", load_space(old)) is None  # the same space: nothing to add
    assert growth(store, "nosuch", load_space(grown_file)) is None  # no table yet: record it all

    grown = growth(store, "table", load_space(grown_file))
    assert grown is not None and grown.name == "table+vpt" and grown.methods == ("vpt",)
    assert len(grown.space.configurations()) == 2  # vpt at both learning rates, not linear
    before = merged_table(store, "table", load_space(grown_file))
    assert (before.meta["configurations"], before.meta["missing"]) == (4, 2)

    written = grown.write_space(tmp_path)
    assert written.read_text() == grown.write_space(tmp_path).read_text()  # resumable
    _record(written, grown.name, tmp_path, sqlite_url)
    table = merged_table(store, "table", load_space(grown_file))
    assert (table.meta["configurations"], table.meta["missing"]) == (4, 0)
    assert sorted(c.config["method"] for c in table.curves) == ["linear", "linear", "vpt", "vpt"]
    assert table.meta["extended_by"] == "table+vpt"

    changed = tmp_path / "changed" / "grid.yaml"
    changed.parent.mkdir()
    changed.write_text(GROWN.replace("1.0e-1", "3.0e-2"))
    with pytest.raises(GrowthError, match="the shared train options changed"):
        growth(store, "table", load_space(changed))
