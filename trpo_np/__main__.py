"""``python -m trpo_np``: the same command line as run.py."""

import sys

from trpo_np.cli import main

sys.exit(main())
