"""``python -m metagrad.app.cli``: the ``metagrad`` command."""

import sys

from metagrad.app.cli import main

sys.exit(main())
