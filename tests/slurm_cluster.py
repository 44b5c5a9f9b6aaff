"""A real single-node Slurm cluster for tests: munged, slurmctld and slurmd from Debian's `slurm-wlm`, started in a
temporary folder with their own key, socket, ports and state, and stopped afterwards.

`SlurmCluster(folder).start()` returns the environment (`SLURM_CONF`) under which `sbatch`, `squeue` and datatrove's
`SlurmPipelineExecutor` talk to it. It needs the packages (`apt-get install slurm-wlm munge`, which `.ci/run` does)
and root (slurmd launches jobs as their user); `unavailable()` says why it cannot run, else None.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")


def unavailable() -> str | None:
    """Why a cluster cannot be started here, or None."""
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        return f"slurm-wlm / munge are not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "slurmd must run as root to launch jobs"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """One node (this machine, all its CPUs) and one partition, `cpu`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.env: dict[str, str] = {}
        self._pid_files: list[Path] = []

    def start(self, timeout: float = 30.0) -> dict[str, str]:
        """Start the daemons and wait until the node is idle; returns the clients' environment."""
        f = self.folder
        for name in ("state", "spool", "log"):
            (f / name).mkdir(parents=True, exist_ok=True)
        key, sock = f / "munge.key", f / "munge.socket"
        subprocess.run(["mungekey", "--create", "--keyfile", str(key), "--force"], check=True, capture_output=True)
        key.chmod(0o400)
        subprocess.run(
            ["munged", "--force", f"--key-file={key}", f"--socket={sock}", f"--pid-file={f / 'munged.pid'}",
             f"--log-file={f / 'log' / 'munged.log'}", f"--seed-file={f / 'munged.seed'}"],
            check=True, capture_output=True,
        )  # fmt: skip
        self._pid_files.append(f / "munged.pid")
        host, cpus = socket.gethostname().split(".")[0], os.cpu_count() or 1
        conf = f / "slurm.conf"
        conf.write_text(
            "\n".join(
                [
                    "ClusterName=mmsieve-test",
                    f"SlurmctldHost={host}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={sock}",
                    f"StateSaveLocation={f / 'state'}",
                    f"SlurmdSpoolDir={f / 'spool'}",
                    f"SlurmctldPidFile={f / 'slurmctld.pid'}",
                    f"SlurmdPidFile={f / 'slurmd.pid'}",
                    f"SlurmctldLogFile={f / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={f / 'log' / 'slurmd.log'}",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SchedulerType=sched/builtin",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "ReturnToService=2",
                    "MpiDefault=none",
                    "JobCompType=jobcomp/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    f"NodeName={host} CPUs={cpus} RealMemory=16000 State=UNKNOWN",
                    f"PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        self.env = {"SLURM_CONF": str(conf)}
        env = {**os.environ, **self.env}
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-c"], check=True, capture_output=True, env=env)
            self._pid_files.append(f / f"{daemon}.pid")
        deadline = time.monotonic() + timeout
        while "idle" not in self.run("sinfo", "-h", "-o", "%t"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Slurm node did not come up: {(f / 'log' / 'slurmd.log').read_text()[-2000:]}")
            time.sleep(0.2)
        return self.env

    def run(self, *command: str) -> str:
        """A Slurm client command's output (empty when it fails)."""
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **self.env})
        return result.stdout

    def wait_idle(self, timeout: float) -> None:
        """Wait until no job is queued or running (a job whose dependency failed counts as finished)."""
        deadline = time.monotonic() + timeout
        while True:
            queued = [line for line in self.run("squeue", "-h", "-o", "%i %r").splitlines() if line.strip()]
            if not [line for line in queued if "DependencyNeverSatisfied" not in line]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Slurm jobs still queued: {queued}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel every job and stop the daemons."""
        if self.env:
            self.run("scancel", "--full", "--user", "root")
        for pid_file in reversed(self._pid_files):
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                continue
