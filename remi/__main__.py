"""`python -m remi ...`: the same as the `remi` command."""

import sys

from remi.cli import main

sys.exit(main())
