"""``python -m server`` runs ``boxfs-server``."""

import sys

from server.cli import main

sys.exit(main())
