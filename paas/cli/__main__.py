"""`python -m paas.cli`: the `paas` command."""

import sys

from paas.cli.main import main

sys.exit(main())
