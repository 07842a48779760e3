"""The `netspec` command (also `python -m netspec` and `python runner.py`): one subcommand per job.

    netspec train specs/cnn_no_bn.json --backend torch,jax   # train (the default: netspec SPEC ...)
    netspec summary specs/cnn.json                         # layers, output shapes, parameter counts
    netspec crosscheck specs/cnn.json                      # the backends number by number (exit 1 on a mismatch)
    netspec report runs/                                   # runs/report.md: tables and figures
    netspec export RUN_DIR --format onnx                   # the run's best weights as an ONNX model
    netspec import model.onnx -o DIR                       # DIR/<name>.json + DIR/weights.npz, verified
    netspec evaluate RUN_DIR [--data-dir DIR]              # loss, accuracy, per-class accuracy, confusion matrix
    netspec predict RUN_DIR image.png ...                  # top classes with probabilities
    netspec schema -o schemas/                             # JSON Schemas of experiment and sweep files

Any problem a user can fix prints one line on stderr and exits 2 (netspec.errors.NetspecError).
Backends are resolved by name through the registry (netspec.protocol.backend); this module imports none.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Callable, Optional

from netspec.errors import NetspecError, SpecError, did_you_mean
from netspec.commands.options import PROG
from netspec.commands.training import cmd_search, cmd_train
from netspec.commands.inspection import cmd_crosscheck, cmd_report, cmd_schema, cmd_summary
from netspec.commands.deployment import cmd_evaluate, cmd_export, cmd_import, cmd_predict

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130



COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "train": (cmd_train, "train an experiment or a sweep (the default command)"),
    "search": (cmd_search, "an Optuna search over spec fields (netspec[search])"),
    "summary": (cmd_summary, "layers, output shapes and parameter counts"),
    "crosscheck": (cmd_crosscheck, "two backends number by number"),
    "report": (cmd_report, "report.md over a runs folder"),
    "export": (cmd_export, "a run's best weights as an ONNX model"),
    "import": (cmd_import, "an ONNX model as a spec and weights, verified on every backend"),
    "evaluate": (cmd_evaluate, "a run on a split or another image copy, with a confusion matrix"),
    "predict": (cmd_predict, "the top classes of image files"),
    "schema": (cmd_schema, "JSON Schemas for editors"),
}


def usage(prog: str = PROG) -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {prog} {{{','.join(COMMANDS)}}} ...", f"       {prog} SPEC [options]   (= {prog} train SPEC)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {words}" for name, (_, words) in COMMANDS.items()]
    lines += ["", f"`{prog} COMMAND --help` shows a command's options. Bad input: one line on stderr, exit code 2."]
    return "\n".join(lines)


def _looks_like_a_command(word: str) -> bool:
    """A bare word that names no file (`trian`), as against a spec path (`specs/mlp.json`, `my_spec`
    when that file exists): `netspec SPEC` is `netspec train SPEC`, so only such words are commands."""
    return re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", word) is not None and not Path(word).exists()


def main(argv: Optional[list[str]] = None, prog: str = PROG) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog))
        return 0 if argv else EXIT_BAD_INPUT
    name = argv[0]
    try:
        if name in COMMANDS:
            return COMMANDS[name][0](argv[1:])
        if _looks_like_a_command(name):
            raise SpecError(f"unknown command {name!r}{did_you_mean(name, COMMANDS)}; use one of "
                            f"{', '.join(COMMANDS)}, or give a spec file ({prog} --help)")
        return cmd_train(argv, prog=prog)
    except NetspecError as err:
        print(f"error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", EXIT_BAD_INPUT)  # DivergedError: 3, a result rather than bad input
    except OSError as err:  # an output path the system refuses (a file where a folder goes, /proc, a full disk)
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}; choose another path (--out / -o) or free the disk", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: finished epochs and runs are kept in their folders", file=sys.stderr)
        return EXIT_INTERRUPTED
