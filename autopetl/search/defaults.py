"""The search's choices and defaults, importable without Ray, Optuna or torch.

The command line offers these (so ``autopetl search --help`` starts without loading them), and
the modules that implement them (:mod:`autopetl.search.schedulers`, :mod:`autopetl.search.space`)
read them from here.
"""

from __future__ import annotations

SAMPLERS = ("tpe", "nsga2", "random", "grid")
SCHEDULERS = ("mo-asha", "asha", "none")
# Chosen from benchmarks/search_quality.py on recorded learning curves (docs/SEARCH.md): MO-ASHA
# beat ASHA with every sampler (area under the hypervolume-compute curve +0.03 to +0.06), and a
# grace period of 3 epochs gave TPE with MO-ASHA its best final front (0.985 of the true one).
DEFAULT_SCHEDULER = "mo-asha"
DEFAULT_GRACE_PERIOD = 3
DEFAULT_REDUCTION_FACTOR = 3
# The default strategy's front held 90% of the true front's hypervolume after 15.6 finished
# trials on average over 20 seeds (same benchmark): below this budget a search says little.
MIN_INFORMATIVE_BUDGET = 16
