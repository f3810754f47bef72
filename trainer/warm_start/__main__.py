"""`python -m trainer.warm_start` = `intercept-rl warm-start`."""

import sys

from trainer.warm_start.build import main

sys.exit(main())
