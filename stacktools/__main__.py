"""``python -m stacktools``: the same commands as ``python -m stacks`` (see ``stacktools/cli.py``)."""

import sys

from stacktools.cli import main

sys.exit(main())
