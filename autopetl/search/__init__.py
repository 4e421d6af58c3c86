"""The search: spaces as data, Ray Tune + Optuna runs, the driver-side recorder, resume.

Import from the modules (``autopetl.search.runner``, ``.space``, ...). This file stays empty on
purpose: every Ray worker imports ``autopetl.search.trainable``, and a package that re-exported
the runner would make each new worker import the driver's side too (the store, Optuna, Alembic),
which added about a second to every worker's start (``python -X importtime``).
"""
