"""``python -m hyprvdb`` is the ``hyprvdb`` command."""

import sys

from .cli import main

sys.exit(main())
