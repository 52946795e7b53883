"""``python -m hdlfast``: the same command line as ``hdlfast``."""
import sys

from .cli import main

sys.exit(main())
