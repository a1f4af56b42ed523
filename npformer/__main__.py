"""`python -m npformer ...`: the same command line as the `npformer` console script."""

import sys

from .cli import main

sys.exit(main())
