"""``python -m madeflow``: the command line (see :mod:`madeflow.cli`)."""

import sys

from madeflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
