"""``python -m dcsi`` runs the command line."""

import sys

from dcsi.cli import main

sys.exit(main())
