"""``python -m simclr_teach``: see simclr_teach.cli."""

import sys

from simclr_teach.cli import main

sys.exit(main())
