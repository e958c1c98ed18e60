"""``python -m bfpo.evaluate --model PATH --tasks ...``: the command line of :mod:`bfpo.evaluation`."""

import sys

from bfpo.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
