"""``python -m stacks plan|diff|promote``: the documented entry of the stack tooling, which lives in ``stacktools``.

It stays here because ``diff --base REV`` runs ``python -m stacks plan`` in the tree of REV, whatever its layout.
"""

import sys

from stacktools.cli import main

sys.exit(main())
