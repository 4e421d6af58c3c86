"""Search spaces as data: every shipped space loads, trials hold only their method's parameters,
and a malformed space fails with the file and the key in the message."""

from __future__ import annotations

import pytest
from optuna.trial import FixedTrial

from autopetl.search.space import (
    SPACES_DIR,
    SpaceError,
    load_space,
    max_epochs,
    with_epochs,
)
from autopetl.trial import split_config


@pytest.mark.parametrize("name", sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
def test_every_shipped_space_loads(name):
    space = load_space(name)
    assert space.methods and space.sampler in ("tpe", "nsga2", "random", "grid")


def test_conditional_parameters_only_for_the_chosen_method():
    space = load_space("default")
    values = {
        "method": "dvpt",
        "dvpt.prompt_length": 8,
        "dvpt.depth": 6,
        "dvpt.dynamic": "specific",
        "lr": 1e-3,
        "weight_decay": 1e-5,
    }
    config = space(FixedTrial(values, number=5))
    assert config == {**values, "epochs": 10, "trial_number": 5}
    method, options, train = split_config(config)
    assert method == "dvpt" and options == {"prompt_length": 8, "depth": 6, "dynamic": "specific"}
    assert train == {"lr": 1e-3, "weight_decay": 1e-5, "epochs": 10}
    lora = space(
        FixedTrial(
            {"method": "lora", "lora.rank": 4, "lora.alpha": 8.0, "lr": 1e-3, "weight_decay": 1e-5}
        )
    )
    assert {k for k in lora if "." in k} == {"lora.rank", "lora.alpha"}


def test_vpt_paper_grid_is_the_papers_40_cells():
    space = load_space("vpt_paper")
    cells = space.configurations()
    assert len(cells) == 40 and len({(c["lr"], c["weight_decay"]) for c in cells}) == 40
    assert max_epochs(space) == 100 and max_epochs(with_epochs(space, 3)) == 3


def test_dvpt_ablation_is_depth_by_dynamic():
    (params,) = load_space("dvpt_ablation").methods.values()
    choices = {p.name: p.choices for p in params if p.kind == "categorical"}
    assert choices == {"dvpt.depth": (2, 4, 6), "dvpt.dynamic": ("shared", "specific")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("methods: {prefix: {}}", "methods.prefix: unknown method"),
        ("methods: {vpt: {length: 3}}", "methods.vpt.length: unknown option"),
        (
            "methods: {vpt: {prompt_length: {type: int, low: 9, high: 9}}}",
            "methods.vpt.prompt_length: empty range",
        ),
        (
            "methods: {vpt: {prompt_length: {type: gaussian, mu: 3}}}",
            "methods.vpt.prompt_length: type must be one of",
        ),
        (
            "methods: {vpt: {prompt_length: {type: int, low: 0, high: 9, log: true}}}",
            "a log range needs low > 0",
        ),
        (
            "methods: {vpt: {prompt_length: {type: int, low: 0, high: 9}}}",
            "prompt_length must be >= 1",
        ),
        (
            "methods: {vpt: {deep: {type: categorical, choices: []}}}",
            "methods.vpt.deep: choices must be a non-empty list",
        ),
        (
            "methods: {vpt: {deep: {type: categorical, choices: [maybe]}}}",
            "deep must be true or false",
        ),
        (
            "methods: {vpt: {}}\ntrain: {momentum: 0.9}",
            "train.momentum: unknown training parameter",
        ),
        (
            "methods: {vpt: {}}\ntrain: {lr: {type: float, low: -1, high: 1}}",
            "train.lr: learning rate must be > 0",
        ),
        ("methods: {vpt: {}}\nsampler: cmaes", "sampler: 'cmaes' is not one of"),
        (
            "methods: {vpt: {}}\ntrain: {lr: {type: float, low: 0.001, high: 0.1}}\nsampler: grid",
            "not a continuous float range",
        ),
        ("method: {vpt: {}}", "unknown key 'method'"),
        ("methods: [vpt]", "'methods' must map"),
        ("methods: {vpt: {deep: [true, false}", "not valid YAML"),
    ],
)
def test_malformed_spaces_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_unknown_space_name_lists_the_known_ones():
    with pytest.raises(SpaceError, match="default"):
        load_space("nope")


def test_a_method_can_have_its_own_learning_rate_range():
    import yaml

    from autopetl.search.space import parse_space

    text = """
methods:
  linear: {train: {lr: {type: categorical, choices: [0.1, 1.0]}}}
  vpt: {prompt_length: 4}
train: {lr: {type: categorical, choices: [1.0e-3, 1.0e-2]}, weight_decay: 0.0}
"""
    space = parse_space(yaml.safe_load(text), name="own", where="<own>")
    configs = space.configurations()
    linear = [c for c in configs if c["method"] == "linear"]
    assert [c["linear.train.lr"] for c in linear] == [0.1, 1.0] and "lr" not in linear[0]
    assert len(configs) == 4
    method, options, train = split_config(linear[1])
    assert (method, options, train) == ("linear", {}, {"lr": 1.0, "weight_decay": 0.0})
    sampled = space(FixedTrial({"method": "vpt", "lr": 1e-2}))
    assert split_config(sampled)[1:] == ({"prompt_length": 4}, {"lr": 1e-2, "weight_decay": 0.0})
    with pytest.raises(SpaceError, match=r"methods\.linear\.train\.epochs: not a per-method"):
        parse_space({"methods": {"linear": {"train": {"epochs": 3}}}}, name="bad", where="<bad>")
    with pytest.raises(SpaceError, match=r"methods\.linear\.train\.lr: learning rate must be > 0"):
        parse_space({"methods": {"linear": {"train": {"lr": -1}}}}, name="bad", where="<bad>")
