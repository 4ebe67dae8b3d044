"""``python -m pipeline.search``: see :mod:`pipeline.search.cli`."""

import sys

from pipeline.search.cli import main

sys.exit(main())
