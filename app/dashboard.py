"""The autopetl dashboard, a Streamlit app: ``autopetl dashboard [--db URL]`` starts it.

Or by hand, from the repository root: ``AUTOPETL_DB=sqlite:///runs.db streamlit run
app/dashboard.py``. The page lives in :mod:`autopetl.dashboard.page` (importable and tested);
this file only runs it, so Streamlit's script runner has a file to watch. See docs/DASHBOARD.md.
"""

from __future__ import annotations

from autopetl.dashboard.page import render

render()
