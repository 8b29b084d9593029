"""``python -m fastchat`` is the ``fastchat`` command."""

import sys

from fastchat.cli import main

sys.exit(main())
