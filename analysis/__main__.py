"""``python -m analysis RESULTS --reference DATASET --out DIR``."""

import sys

from analysis.cli import main

sys.exit(main())
