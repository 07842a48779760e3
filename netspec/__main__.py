"""`python -m netspec ...`: the same command as the installed `netspec` (netspec/cli.py)."""
import sys

from netspec.cli import main

sys.exit(main())
