"""A one-node Slurm cluster on this machine: munge, slurmctld and slurmd under one directory, on
ports of their own, touching no system configuration. For trying the Slurm profile before a
real cluster, and for its test.

    python workflow/scripts/slurm_cluster.py start --root DIR   # prints SLURM_CONF=... PATH=...
    python workflow/scripts/slurm_cluster.py status --root DIR
    python workflow/scripts/slurm_cluster.py stop --root DIR

`start` prints `SLURM_CONF=DIR/slurm.conf PATH=DIR/bin:$PATH` as its only line on stdout (the
rest goes to stderr), so `export $(python workflow/scripts/slurm_cluster.py start --root DIR)`
points sbatch, squeue and scancel at it, and the srun of a job too (DIR/bin/srun: Snakemake's
jobstep plugin drops SLURM_CONF from the job's environment). The node offers this machine's
CPUs and 90% of its memory, and no GPU. There is no accounting database (slurmdbd), so no
sacct: Snakemake asks squeue instead (--slurm-status-command squeue), and finished jobs stay
visible to it for an hour (MinJobAge), with their rule as the comment (squeue -t all -o %k).
Debian: apt-get install slurmctld slurmd slurm-client munge.
"""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

INSTALL = "apt-get install slurmctld slurmd slurm-client munge"
BINARIES = (
    "munged",
    "mungekey",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "squeue",
    "sinfo",
    "scancel",
)
DAEMONS = ("slurmd", "slurmctld", "munged")  # stopped in this order
READY_TIMEOUT_S = 60


class ClusterError(Exception):
    """What went wrong and the fix, in one line."""


def _find(name: str) -> str | None:
    # Debian puts the daemons in /usr/sbin, which a user's PATH may lack.
    for folder in [*os.environ.get("PATH", "").split(":"), "/usr/sbin", "/sbin"]:
        if folder and Path(folder, name).is_file():
            return str(Path(folder, name))
    return None


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if _find(name) is None]


def _binary(name: str) -> str:
    if found := _find(name):
        return found
    raise ClusterError(f"{name} not found: {INSTALL}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node() -> tuple[str, int, int]:
    """This machine as slurmd sees it: (name, CPUs, memory in MB)."""
    found = subprocess.run([_binary("slurmd"), "-C"], capture_output=True, text=True, check=True)
    fields = dict(f.split("=", 1) for f in found.stdout.split() if "=" in f)
    return fields["NodeName"], int(fields["CPUs"]), int(fields["RealMemory"])


def slurm_conf(root: Path, user: str, node: tuple[str, int, int]) -> str:
    name, cpus, memory = node
    lines = {
        "ClusterName": "simsiam",
        "SlurmctldHost": f"{name}(127.0.0.1)",
        "SlurmctldPort": _free_port(),
        "SlurmdPort": _free_port(),
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        "AuthInfo": f"socket={root / 'munge.socket'}",
        "SlurmUser": user,
        "SlurmdUser": user,
        "StateSaveLocation": root / "state",
        "SlurmdSpoolDir": root / "spool",
        "SlurmctldPidFile": root / "slurmctld.pid",
        "SlurmdPidFile": root / "slurmd.pid",
        "SlurmctldLogFile": root / "slurmctld.log",
        "SlurmdLogFile": root / "slurmd.log",
        # No cgroups in a container: processes tracked by their parent, tasks not confined.
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core_Memory",
        "AccountingStorageType": "accounting_storage/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "JobCompType": "jobcomp/filetxt",
        "JobCompLoc": root / "jobcomp.log",
        "MinJobAge": 3600,
        "ReturnToService": 2,
        "MpiDefault": "none",
    }
    conf = [f"{key}={value}" for key, value in lines.items()]
    conf.append(
        f"NodeName={name} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={int(memory * 0.9)} "
        "State=UNKNOWN"
    )
    conf.append(f"PartitionName=debug Nodes={name} Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(conf) + "\n"


def _env(root: Path) -> dict[str, str]:
    return os.environ | {"SLURM_CONF": str(root / "slurm.conf")}


def _node_state(root: Path) -> str:
    found = subprocess.run(
        [_binary("sinfo"), "-h", "-o", "%T"], capture_output=True, text=True, env=_env(root)
    )
    return found.stdout.strip() if found.returncode == 0 else ""


def _last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return lines[-1] if lines else f"{log}: empty"


def start(root: Path) -> None:
    if missing := missing_binaries():
        raise ClusterError(f"{', '.join(missing)} not found: {INSTALL}")
    if (root / "slurmctld.pid").is_file():
        raise ClusterError(f"{root} already holds a cluster; stop it first (stop --root {root})")
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    key = root / "munge.key"
    subprocess.run([_binary("mungekey"), "-c", "-f", "-k", str(key)], check=True)
    subprocess.run(
        [
            _binary("munged"),
            f"--key-file={key}",
            f"--socket={root / 'munge.socket'}",
            f"--pid-file={root / 'munged.pid'}",
            f"--log-file={root / 'munged.log'}",
            f"--seed-file={root / 'munged.seed'}",
            "--force",  # its key and socket lie in a directory it does not expect
        ],
        check=True,
    )
    (root / "slurm.conf").write_text(slurm_conf(root, getpass.getuser(), _node()))
    for daemon in ("slurmctld", "slurmd"):
        done = subprocess.run([_binary(daemon)], env=_env(root), capture_output=True, text=True)
        if done.returncode:
            raise ClusterError(f"{daemon} did not start: {_last_line(root / f'{daemon}.log')}")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while (state := _node_state(root)) != "idle":
        if time.monotonic() > deadline:
            raise ClusterError(
                f"the node is {state or 'unknown'} after {READY_TIMEOUT_S} s: "
                f"{_last_line(root / 'slurmd.log')}"
            )
        time.sleep(0.5)
    # Snakemake's jobstep plugin drops SLURM_* from a job's environment before its srun, and
    # srun without SLURM_CONF looks in /etc/slurm: a wrapper first on PATH puts it back.
    (root / "bin").mkdir(exist_ok=True)
    wrapper = root / "bin" / "srun"
    wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={root / "slurm.conf"} exec {_binary("srun")} "$@"\n')
    wrapper.chmod(0o755)
    print(f"slurm: one node up ({root / 'slurm.conf'})", file=sys.stderr)
    print(f"SLURM_CONF={root / 'slurm.conf'} PATH={root / 'bin'}:{os.environ.get('PATH', '')}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(root: Path) -> None:
    if (root / "slurm.conf").is_file() and _node_state(root):
        subprocess.run([_binary("scancel"), "--user", getpass.getuser()], env=_env(root))
    for daemon in DAEMONS:
        pid_file = root / f"{daemon}.pid"
        if not pid_file.is_file():
            print(f"{daemon}: not running", file=sys.stderr)
            continue
        pid = int(pid_file.read_text().split()[0])
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        pid_file.unlink(missing_ok=True)
        print(f"{daemon}: stopped", file=sys.stderr)


def status(root: Path) -> None:
    state = _node_state(root) if (root / "slurm.conf").is_file() else ""
    print(f"slurm at {root}: {'node ' + state if state else 'not running'}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("start", "status", "stop"))
    parser.add_argument("--root", required=True, type=Path, help="the cluster's directory")
    args = parser.parse_args(argv)
    try:
        {"start": start, "status": status, "stop": stop}[args.command](args.root.resolve())
    except ClusterError as err:
        print(f"slurm_cluster.py {args.command}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
