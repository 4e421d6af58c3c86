"""The one configuration type: its flat form, its Tune form and the older nested record, each
made and parsed in autopetl/trial.py, and the training config a trial gets from it."""

from __future__ import annotations

import math

import pytest
from optuna.trial import FixedTrial

from autopetl.search.space import load_space
from autopetl.trial import (
    NUMBER_KEY,
    TrialConfig,
    TrialSetup,
    flat_key,
    flat_of,
    train_config_of,
    trial_number_of,
    tune_config,
)

FLAT = {"method": "vpt", "vpt.prompt_length": 10, "vpt.deep": True, "lr": 0.01, "epochs": 4}


def test_the_tune_form_is_the_flat_form_with_the_trial_number():
    config = tune_config(FLAT, 7)
    assert trial_number_of(config) == 7 and config[NUMBER_KEY] == 7
    assert flat_of(config) == FLAT
    parsed = TrialConfig.from_flat(config)
    assert parsed == TrialConfig(
        "vpt", {"prompt_length": 10, "deep": True}, {"lr": 0.01, "epochs": 4}
    )
    assert parsed.flat() == FLAT


def test_a_sampled_configuration_is_the_tune_form():
    space = load_space("default")
    values = {"method": "lora", "lora.rank": 4, "lora.alpha": 8.0, "lr": 1e-3, "weight_decay": 1e-5}
    config = space(FixedTrial(values, number=3))
    assert trial_number_of(config) == 3
    assert flat_of(config) == {**values, "epochs": 10}


def test_nan_columns_of_a_result_table_are_not_configuration():
    """Ray's result tables fill a column a trial lacks with NaN; it is not a value of the trial."""
    config = {**FLAT, "lora.rank": math.nan, NUMBER_KEY: 1}
    assert flat_of(config) == FLAT
    assert flat_key(config) == flat_key(FLAT)
    assert flat_key({**FLAT, "lr": 0.02}) != flat_key(FLAT)


def test_the_nested_record_of_older_train_runs_reads_as_the_same_configuration():
    nested = {
        "method": "vpt",
        "method_config": {"prompt_length": 10, "deep": True},
        "train": {
            "lr": 0.01,
            "epochs": 4,
            "seed": 3,
            "device": "cpu",
        },  # seed, device: not searched
    }
    assert TrialConfig.from_record(nested) == TrialConfig.from_flat(FLAT)
    assert TrialConfig.from_record(FLAT) == TrialConfig.from_flat(FLAT)


def test_a_methods_own_training_option_takes_the_place_of_the_shared_one():
    flat = {"method": "linear", "linear.train.lr": 0.5, "lr": 1e-3, "weight_decay": 0.0}
    config = TrialConfig.from_flat(flat)
    assert config.options == {} and config.train == {"lr": 0.5, "weight_decay": 0.0}


@pytest.mark.parametrize(
    ("requested", "epochs", "expected"), [(1.0, 4, 1.0), (10.0, 4, 3.0), (2.0, 1, 0.0)]
)
def test_the_training_config_gets_the_warmup_rule_and_the_runs_seed(requested, epochs, expected):
    from autopetl.backbones import SMOKE_BACKBONE

    config = TrialConfig("linear", {}, {"lr": 0.1, "epochs": epochs, "warmup_epochs": requested})
    train = train_config_of(config, TrialSetup(SMOKE_BACKBONE, 10, seed=5), "cpu")
    assert (train.lr, train.epochs, train.warmup_epochs, train.seed) == (0.1, epochs, expected, 5)
    assert config.train["warmup_epochs"] == requested  # the configuration itself is unchanged
