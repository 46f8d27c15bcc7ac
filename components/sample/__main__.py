"""``python -m components.sample``: see :mod:`components.sample.cli`."""

import sys

from components.sample.cli import main

sys.exit(main())
