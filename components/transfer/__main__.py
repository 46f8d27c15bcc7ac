import sys

from components.transfer.cli import main

sys.exit(main())
