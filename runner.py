#!/usr/bin/env python
"""The `netspec` command, run from a checkout: `python runner.py SPEC [options]` trains, and every
subcommand of netspec/cli.py works here too (`python runner.py report runs/`, `... export RUN_DIR`).

    python runner.py specs/cnn_no_bn.json --backend torch       # train, write runs/cnn_no_bn/torch/<id>/
    python runner.py specs/cnn.json --summary                   # layers, output shapes, parameters
    python runner.py specs/cnn.json --crosscheck                # torch vs jax, number by number
"""
from __future__ import annotations

import sys

from netspec.cli import main

if __name__ == "__main__":
    sys.exit(main())  # messages name the command `netspec`, as the README does
