"""The `netspec` subcommands, one module per kind of job (netspec.cli dispatches to them): the options they
share, training and searching, looking at specs and runs, and what comes after training."""
