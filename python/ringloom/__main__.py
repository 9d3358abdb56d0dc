"""``python -m ringloom ...`` is the ``ringloom`` command."""
import sys

from .cli import main

sys.exit(main())
