"""``python -m weightscope.cli``."""

import os

from weightscope.cli import main

os._exit(main())
