"""``distgan launch [accelerate launch options] COMMAND ...``: ``accelerate launch -m distgan
COMMAND ...`` with distgan's exit codes and one line at the end, never a launcher traceback.

Under plain ``accelerate launch`` a clean stop (SIGTERM or Ctrl-C to the launcher, pre-emption,
``train.time_limit``) writes its checkpoint and every rank exits 75, yet the launcher (torch
elastic's agent, inside accelerate) turns that into a 30-line traceback (``SignalException`` when
it was signalled itself, ``ChildFailedError`` when a worker exits non-zero) and exit 1. This runs
the same launcher in this process and reads the outcome instead: 75 with one line when the ranks
stopped cleanly (they write ``$DISTGAN_STOPPED``, which is also what slurm/requeue.sh reads), the
first failed rank's own code (2 for configuration, 1 for files and faults; its one-line error is
printed above) otherwise.

The launcher forwards SIGTERM/SIGINT to the workers (started in sessions of their own, so a
Ctrl-C in the terminal reaches them once, through it) and kills them 30 s later if they are still
running: a checkpoint that takes longer is better requested through ``$DISTGAN_STOP_REQUEST``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from distgan.engine.signals import EXIT_REQUEUE


def split(argv: list[str], commands: set[str]) -> tuple[list[str], list[str]]:
    """(accelerate's options, the distgan command and its arguments): the command starts at the
    first argument that names a distgan command."""
    for i, arg in enumerate(argv):
        if arg in commands:
            return argv[:i], argv[i:]
    return argv, []


def launch(argv: list[str], commands: set[str]) -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    options, command = split(argv, commands)
    if not command and {"-h", "--help"} & set(options):
        print("usage: distgan launch [accelerate launch options] COMMAND [ARGS ...]\n")
        print(__doc__.split("\n\n")[0].replace("``", "`"))
        print("\naccelerate launch options: see `accelerate launch --help`")
        return 0
    if not command:
        print(
            "distgan: error: distgan launch [accelerate launch options] COMMAND ..., e.g. "
            "distgan launch --config_file launch/cpu-2proc.yaml train digits-cdcgan",
            file=sys.stderr,
        )
        return 2
    args = launch_command_parser().parse_args([*options, "-m", "distgan", *command])
    with tempfile.TemporaryDirectory(prefix="distgan-launch-") as private:
        marker = Path(os.environ.setdefault("DISTGAN_STOPPED", str(Path(private) / "stopped")))
        code, why = 0, ""
        try:
            launch_command(args)
        except ChildFailedError as err:
            _, first = err.get_first_failure()
            code = first.exitcode if first.exitcode in (1, 2) else 1
            why = f"rank {first.local_rank} exited with {_describe(first.exitcode)}"
        except subprocess.CalledProcessError as err:  # (one process: accelerate's simple launcher)
            code = err.returncode if err.returncode in (1, 2) else 1
            why = f"the process exited with {_describe(err.returncode)}"
        except SignalException as err:
            code = 128 + int(err.sigval)
            why = f"the launcher got {_describe(-int(err.sigval))} before any rank stopped cleanly"
        except KeyboardInterrupt:
            code, why = 130, "interrupted"
        stopped = marker.read_text().split() if marker.is_file() else []
    if stopped:  # every rank wrote its checkpoint part and exited 75
        reason, step = " ".join(stopped[:-1]), stopped[-1]
        print(
            f"distgan: stopped cleanly at step {step} ({reason}); its checkpoint is written: run "
            "the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_REQUEUE
    if code:
        print(f"distgan: error: {why}", file=sys.stderr)
    return code


def _describe(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"
