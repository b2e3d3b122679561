"""External processors (Sen2Cor, MAJA) run in their own process group; stopping one stops all it started.

Each process is started with ``start_new_session=True`` (a new process group led by it), so a cancel or a
timeout reaches its children too, and no orphan outlives the run.
"""

import os
import signal
import subprocess
import sys
import time

WINDOWS = sys.platform.startswith("win")
TERM_GRACE = 1.0  # SIGTERM, then SIGKILL after this long: a whole stop stays under 2 s


def stop(processes, grace=TERM_GRACE):
    """SIGTERM the groups of ``processes``, SIGKILL what is left after ``grace`` seconds."""
    processes = [p for p in processes if p is not None]
    for process in processes:
        signal_group(process, terminate=True)
    _wait_gone(processes, grace)
    for process in processes:
        if alive(process):
            signal_group(process, terminate=False)
    _wait_gone(processes, grace)
    for process in processes:
        if process.poll() is None:  # a leader that left its own group: take it directly
            process.kill()


def _wait_gone(processes, grace):
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in processes):
        time.sleep(0.02)


def signal_group(process, terminate):
    """TERM (or KILL) the process group led by ``process``; on Windows, CTRL_BREAK then ``taskkill /T``."""
    if WINDOWS:
        if terminate:
            process.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True)
        return
    try:
        os.killpg(process.pid, signal.SIGTERM if terminate else signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def alive(process):
    """Whether the leader or any process of its group still runs (zombies do not count: nobody may reap them)."""
    process.poll()  # reap the leader if it has ended
    if WINDOWS:  # no process groups to look at: taskkill /T takes the tree, the leader stands for it
        return process.poll() is None
    if os.path.isdir("/proc"):
        return bool(group_members(process.pid))
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid):
    """PIDs of process group ``pgid`` that are not zombies (Linux /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members
