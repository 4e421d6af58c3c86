"""The dashboard's logic, importable and testable without Streamlit running.

- :mod:`autopetl.dashboard.data`: the store's records as pandas frames (trials with their costs
  and test evaluations, learning curves, progress over time) and the Pareto front of a frame.
- :mod:`autopetl.dashboard.figures`: the plotly figures built from those frames.
- :mod:`autopetl.dashboard.page`: the Streamlit page itself (``app/dashboard.py`` runs it).

See docs/DASHBOARD.md.
"""

from __future__ import annotations
