"""A real Slurm cluster on this one machine, for the slurm/ template tests.

Installs Debian's Slurm packages if missing (root + apt, ~15 s), writes a config with two nodes
``n1`` and ``n2`` on this host (distinct slurmd ports) whose tasks are bound to their CPUs
(``task/affinity``, as on clusters with cgroups or affinity: a step given too few CPUs shows),
starts slurmctld and two slurmd, and shuts everything down afterwards, leaving nothing running.
Authentication is ``auth/none`` (no munged needed on a single machine). Requeue delays are
shortened (cred_expire=10, scheduler intervals 5 s) so a pre-empted job restarts in ~15 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client"]
NODES = ["n1", "n2"]


def _sh(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


def install() -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch")):
        return
    if os.geteuid() != 0:
        raise RuntimeError(
            "installing Slurm needs root (apt-get); install slurmctld slurmd slurm-client"
        )
    if os.stat("/dev/null").st_mode & 0o666 != 0o666:  # seen once on a shared machine
        os.chmod("/dev/null", 0o666)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _sh(["apt-get", "update", "-qq"], env=env, timeout=600)
    _sh(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
        env=env,
        timeout=600,
    )


def _node_resources() -> str:
    cpus = os.cpu_count() or 2
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    return f"CPUs={cpus} RealMemory={max(1000, mem_mb // (2 * len(NODES)))}"


def write_config(root: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    nodes = "\n".join(
        f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={17001 + i} "
        f"{_node_resources()} State=UNKNOWN"
        for i, n in enumerate(NODES)
    )
    conf.write_text(f"""\
ClusterName=distgan-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort=16817
SlurmUser=root
AuthType=auth/none
CredType=cred/none
AuthInfo=cred_expire=10
MailProg=/bin/true
StateSaveLocation={root}/ctld
SlurmdSpoolDir={root}/d-%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
TaskPluginParam=Cores
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
EnforcePartLimits=ALL
ReturnToService=2
KillWait=30
MinJobAge=300
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
""")
    (root / "ctld").mkdir(exist_ok=True)
    for n in NODES:
        (root / f"d-{n}").mkdir(exist_ok=True)
    return conf


def _ensure_hosts() -> None:
    """Templates use the first node name as the rendezvous address: make n1, n2 resolvable."""
    hosts = Path("/etc/hosts").read_text()
    missing = [
        n
        for n in NODES
        if not any(
            n in line.split()[1:]
            for line in hosts.splitlines()
            if line.strip() and not line.startswith("#")
        )
    ]
    if missing:
        with open("/etc/hosts", "a") as f:
            f.write(f"127.0.0.1 {' '.join(missing)}\n")


@contextlib.contextmanager
def cluster(root: Path) -> Iterator[dict[str, str]]:
    """Start the cluster; yield the environment that points Slurm commands at it."""
    install()
    _ensure_hosts()
    conf = write_config(root)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    pids: list[int] = []
    try:
        _sh(["slurmctld"], env=env)
        for n in NODES:
            _sh(["slurmd", "-N", n], env=env)
        pid_files = [root / "slurmctld.pid", *(root / f"slurmd-{n}.pid" for n in NODES)]
        for pid_file in pid_files:
            for _ in range(100):
                if pid_file.exists() and pid_file.read_text().strip():
                    break
                time.sleep(0.1)
            pids.append(int(pid_file.read_text()))
        for _ in range(120):
            states = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True
            ).stdout.split()
            if states and all(s == "idle" for s in states):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(
                f"Slurm nodes did not become idle:\n{(root / 'slurmctld.log').read_text()[-3000:]}"
            )
        yield env
    finally:
        subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True)
        subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True)
        deadline = time.monotonic() + 30
        for pid in pids:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)


def job_state(env: dict[str, str], job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True
    ).stdout
    fields = {}
    for token in out.split():
        if "=" in token:
            key, _, value = token.partition("=")
            fields.setdefault(key, value)
    return fields
