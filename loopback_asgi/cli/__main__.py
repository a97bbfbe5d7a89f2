"""``python -m loopback_asgi.cli``: the ``jupyter-loopback`` command."""

import sys

from loopback_asgi.cli.main import main

sys.exit(main())
