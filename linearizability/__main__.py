"""``python -m linearizability check ...``: see :mod:`linearizability.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
