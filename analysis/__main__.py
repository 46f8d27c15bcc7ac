"""``python -m analysis``: the same as ``aprflow analyze`` (:mod:`analysis.cli`)."""

import sys

from analysis.cli import main

sys.exit(main())
