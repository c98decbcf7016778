"""``python -m labeldistill ...``: the same command line as the ``labeldistill`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
