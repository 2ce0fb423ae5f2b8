"""`python -m bortify ...`: the same as the `bortify` script."""

import sys

from bortify.cli import main

if __name__ == "__main__":
    sys.exit(main())
