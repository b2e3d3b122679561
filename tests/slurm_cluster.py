"""A single-node SLURM cluster for tests: ``munged``, ``slurmctld -D`` and ``slurmd -D`` from a ``slurm.conf``
generated in a temporary folder, with this machine as the only node. It starts in about a second and runs real job
arrays; ``SLURM_CONF`` points the daemons and every client (sbatch, squeue, ...) at it, so nothing in /etc is used
and a cluster of another test session on the same machine does not interfere (own ports, own munge socket).

Choices, and why:
- ``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none``: containers have no usable cgroups;
- ``JobAcctGatherType=jobacct_gather/linux`` with ``OverMemoryKill`` and a 1 s sampling: the scheduler really kills
  a task above its ``--mem`` (the tests' memory-limit case), as cgroups would on a cluster;
- ``AccountingStorageType=accounting_storage/none``: sacct would need slurmdbd and a database; the plugin then
  reads task states from scontrol (the job stays known for MinJobAge, 300 s) and squeue, which is the fallback
  real clusters without accounting need too;
- ``SchedulerParameters=batch_sched_delay=0`` and ``KillWait=2``: tasks start within a second and a time-limit
  kill takes 2 s after the SIGTERM instead of 30.

Root is needed: slurmd starts every job as its user, which only root can do. ``python tests/slurm_cluster.py``
starts one and prints its SLURM_CONF until Ctrl-C.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
START_TIMEOUT = 30
SBIN = "/usr/sbin:/sbin"


class ClusterError(RuntimeError):
    pass


def _which(name):
    return shutil.which(name) or shutil.which(name, path=SBIN)


def unavailable():
    """Why the cluster cannot run here (a sentence), or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the test SLURM cluster needs root (slurmd starts jobs as their users)"
    absent = [name for name in DAEMONS + CLIENTS if not _which(name)]
    if absent:
        return (f"{', '.join(absent)} not installed: apt-get install slurm-wlm munge (scripts/deps.sh installs them "
                f"when run as root)")
    return None


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _real_memory_mb():
    """MemTotal less a margin for the daemons and the tests themselves."""
    with open("/proc/meminfo", encoding="ascii") as handle:
        total = next(int(line.split()[1]) // 1024 for line in handle if line.startswith("MemTotal:"))
    return max(256, total - max(512, total // 10))


class Cluster:
    def __init__(self, base=None):
        self.base = base or tempfile.mkdtemp(prefix="s2-slurm-")
        self.conf = os.path.join(self.base, "slurm.conf")
        self.node = socket.gethostname().split(".")[0]
        self.memory_mb = _real_memory_mb()
        self.cpus = os.cpu_count() or 1
        self.processes = {}
        self.started_in = None

    @property
    def env(self):
        return dict(os.environ, SLURM_CONF=self.conf)

    def start(self):
        began = time.monotonic()
        self._start_munge()
        self._write_conf()
        self._daemon("slurmctld", ["-D", "-i", "-f", self.conf])
        self._daemon("slurmd", ["-D", "-f", self.conf, "-N", self.node])
        self._wait_until_idle(began + START_TIMEOUT)
        self.started_in = time.monotonic() - began
        return self

    def _start_munge(self):
        folder = os.path.join(self.base, "munge")
        os.makedirs(folder, mode=0o755)  # munged wants others to reach the socket
        key = os.path.join(folder, "munge.key")
        with open(key, "wb") as handle:
            handle.write(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        self.socket = os.path.join(folder, "munge.socket")
        self._daemon("munged", ["-F", "--force", f"--socket={self.socket}", f"--key-file={key}",
                                f"--log-file={folder}/munged.log", f"--pid-file={folder}/munged.pid",
                                f"--seed-file={folder}/munged.seed"])
        deadline = time.monotonic() + 10
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline or self.processes["munged"].poll() is not None:
                raise ClusterError(f"munged did not start:\n{self.logs()}")
            time.sleep(0.05)

    def _write_conf(self):
        base = self.base
        for folder in ("state", "spool", "log"):
            os.makedirs(os.path.join(base, folder), exist_ok=True)
        lines = [
            "ClusterName=s2test", f"SlurmctldHost={self.node}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "AuthType=auth/munge",
            "CredType=cred/munge", f"AuthInfo=socket={self.socket}", f"StateSaveLocation={base}/state",
            f"SlurmdSpoolDir={base}/spool", f"SlurmctldPidFile={base}/slurmctld.pid",
            f"SlurmdPidFile={base}/slurmd.pid", f"SlurmctldLogFile={base}/log/slurmctld.log",
            f"SlurmdLogFile={base}/log/slurmd.log", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/linux", "JobAcctGatherFrequency=task=1",
            "JobAcctGatherParams=OverMemoryKill", "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none", "MpiDefault=none", "ReturnToService=2", "KillWait=2", "InactiveLimit=0",
            "SchedulerParameters=batch_sched_delay=0",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"]
        with open(self.conf, "w", encoding="ascii") as handle:
            handle.write("\n".join(lines) + "\n")

    def _daemon(self, name, arguments):
        out = open(os.path.join(self.base, f"{name}.out"), "wb")  # the daemon writes into it; our copy is closed below
        self.processes[name] = subprocess.Popen([_which(name)] + arguments, stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        out.close()

    def _wait_until_idle(self, deadline):
        while time.monotonic() < deadline:
            dead = [name for name, process in self.processes.items() if process.poll() is not None]
            if dead:
                raise ClusterError(f"{', '.join(dead)} exited:\n{self.logs()}")
            states = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.split()
            if "idle" in states:
                return
            time.sleep(0.1)
        raise ClusterError(f"the node did not become idle within {START_TIMEOUT} s:\n{self.logs()}")

    def run(self, *command, check=True):
        return subprocess.run([_which(command[0])] + list(command[1:]), env=self.env, capture_output=True,
                              text=True, check=check, timeout=60)

    def queued(self, job_id):
        """squeue's lines for the job (pending, running or completing tasks)."""
        return self.run("squeue", "-h", "-r", "-j", str(job_id), "-o", "%i %T", check=False).stdout.split("\n")[:-1]

    def logs(self):
        texts = []
        for name in ("munged.out", "slurmctld.out", "slurmd.out", "log/slurmctld.log", "log/slurmd.log"):
            try:
                with open(os.path.join(self.base, name), encoding="utf-8", errors="replace") as handle:
                    texts.append(f"--- {name}\n" + "".join(handle.readlines()[-20:]))
            except OSError:
                pass
        return "\n".join(texts)

    def stop(self):
        """Cancel what still runs, stop the three daemons this object started, remove the folder."""
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            jobs = self.run("squeue", "-h", "-o", "%A", check=False).stdout.split()
            if jobs:
                self.run("scancel", *sorted(set(jobs)), check=False)
                deadline = time.monotonic() + 15
                while self.run("squeue", "-h", check=False).stdout.strip() and time.monotonic() < deadline:
                    time.sleep(0.2)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.get(name)
            if process and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        shutil.rmtree(self.base, ignore_errors=True)


try:
    import pytest
except ImportError:  # the module also runs by itself
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def slurm_cluster():
        """A running single-node cluster with SLURM_CONF set for the whole session (and the processes it starts)."""
        reason = unavailable()
        if reason:
            pytest.skip(reason)
        cluster = Cluster()
        try:
            cluster.start()
        except ClusterError:
            cluster.stop()
            raise
        previous = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = cluster.conf
        yield cluster
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        cluster.stop()


if __name__ == "__main__":
    problem = unavailable()
    if problem:
        raise SystemExit(problem)
    running = Cluster().start()
    print(f"started in {running.started_in:.1f} s: export SLURM_CONF={running.conf}   (Ctrl-C stops it)")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
