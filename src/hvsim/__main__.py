"""``python -m hvsim``: the ``hvsim`` command line."""

import sys

from .cli import main

sys.exit(main())
