"""``python -m autopetl``: the same as the ``autopetl`` console script."""

import sys

from autopetl.cli import main

sys.exit(main())
