"""Stopping cleanly: pre-emption signals and wall-clock limits become a checkpoint, not a loss.

SIGUSR1 (SLURM's pre-emption warning via ``--signal``), SIGTERM (what launchers, ``scancel``
and ``torchrun`` send) and the first Ctrl-C only set a flag; ``train.time_limit`` sets it too, and
so does the file named by ``$DISTGAN_STOP_REQUEST`` when it appears (how slurm/requeue.sh
forwards a pre-emption signal: signalling srun aborts the step, and signalling accelerate's
launcher makes it kill its workers 30 s later, possibly in the middle of a checkpoint).
Every ``check_every`` steps the ranks agree (an all-reduce MAX of the flag, read at the next
check: no host sync in the loop), so all of them stop after the same step; the trainer then
writes one checkpoint and exits with :data:`EXIT_REQUEUE`, which a batch script can read as
"requeue me" (resume=auto continues the run).
"""

from __future__ import annotations

import logging
import os
import signal
import time

import torch

log = logging.getLogger("distgan")

EXIT_REQUEUE = 75  # EX_TEMPFAIL (sysexits.h): "temporary failure, try again"


class StopTraining(Exception):
    """Raised after the stop checkpoint is written; the CLI turns it into EXIT_REQUEUE."""

    def __init__(self, reason: str, step: int) -> None:
        super().__init__(f"stopped at step {step} ({reason}); checkpoint written, resume=auto")
        self.reason = reason
        self.step = step


class StopFlag:
    """Installs the signal handlers and decides, together with the other ranks, when to stop."""

    SIGNALS = ("SIGUSR1", "SIGTERM", "SIGINT")

    def __init__(self, time_limit_s: float | None, check_every: int, device: torch.device) -> None:
        self.reason: str | None = None
        self.request_file = os.environ.get("DISTGAN_STOP_REQUEST")
        self.deadline = time.monotonic() + time_limit_s if time_limit_s else None
        self.check_every = check_every
        self.device = device
        self._pending: tuple[torch.Tensor, object] | None = None  # the last check's all-reduce
        self._previous: dict[int, object] = {}
        for name in self.SIGNALS:
            signum = getattr(signal, name)
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGINT and self.reason is not None:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        name = signal.Signals(signum).name
        if self.reason is None:
            self.reason = name
            log.warning("%s received: stopping after this step with a checkpoint", name)

    def restore(self) -> None:
        """The previous signal handlers back, and the last check's all-reduce finished: a
        collective still in flight when the process group closes aborts the process."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._pending is not None:
            self._read_agreement()
            self._pending = None

    def should_stop(self, step: int) -> str | None:
        """The agreed reason to stop after ``step`` (same answer on every rank), or None.

        With several ranks, each check starts an all-reduce (MAX) of this rank's flag without
        waiting for it, and reads the one the previous check started: every rank sees the same
        agreed flag at the same step, one interval after a rank raised it, and the step loop
        never stops for the host to wait on the devices."""
        if step % self.check_every:
            return None
        if self.reason is None and self.deadline is not None and time.monotonic() >= self.deadline:
            self.reason = "train.time_limit"
        if self.reason is None and self.request_file and os.path.exists(self.request_file):
            with open(self.request_file) as f:
                self.reason = f.read().strip() or "stop requested"
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self.reason
        agreed = self._read_agreement()
        self._start_agreement()
        if not agreed:
            return None
        if self.reason is None:
            self.reason = "another rank stopped"
        return self.reason

    def _start_agreement(self) -> None:
        flag = torch.tensor([1 if self.reason else 0], device=self.device)
        work = torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, async_op=True)
        if self.device.type == "cuda":
            work.wait()  # (orders the copy after the reduction on the device; the host goes on)
            on_host = flag.to("cpu", non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            self._pending = (on_host, done)
        else:
            self._pending = (flag, work)

    def _read_agreement(self) -> bool:
        if self._pending is None:
            return False
        value, done = self._pending
        if isinstance(done, torch.cuda.Event):
            done.synchronize()  # recorded a whole check interval ago: long done
        else:
            done.wait()
        return bool(value.item())
