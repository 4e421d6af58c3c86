"""The search: spaces as data, Ray Tune + Optuna runs, the driver-side recorder, resume."""

from autopetl.search.runner import SearchOutcome, SearchPlan, run_search
from autopetl.search.space import SearchSpace, SpaceError, load_space, split_config

__all__ = [
    "SearchOutcome",
    "SearchPlan",
    "SearchSpace",
    "SpaceError",
    "load_space",
    "run_search",
    "split_config",
]
