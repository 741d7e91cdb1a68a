#!/usr/bin/env python
"""Train, resume or evaluate a TRPO agent: ``python run.py --env Hopper-v4`` (see ``--help``).

The command line lives in trpo_np/cli.py, so that ``python -m trpo_np`` is the same program."""

import sys

from trpo_np.cli import main

if __name__ == "__main__":
    sys.exit(main())
