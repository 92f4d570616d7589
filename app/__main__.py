"""``python -m app``: serve the detector (:mod:`app.serving.launcher`)."""

import sys

from app.serving.launcher import main

sys.exit(main())
