"""``python -m bfpo.evaluation --model PATH --tasks ...`` (see :mod:`bfpo.evaluation.cli`)."""

import sys

from bfpo.evaluation.cli import main

sys.exit(main())
