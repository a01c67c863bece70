"""``python -m gradpen`` runs the CLI (and is what ``torchrun -m gradpen`` launches)."""

import sys

from gradpen.cli import main

sys.exit(main())
