import sys

from components.data.cli import main

sys.exit(main())
