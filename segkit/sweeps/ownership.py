"""Which worker runs which trial, and which trials a new worker continues.

A worker marks the trial it runs with its host and process id, and refreshes a heartbeat while
it runs it. A RUNNING trial is an orphan, to be continued by the next worker that looks, when:

- its job stopped on a signal (SIGTERM, SIGUSR1: :class:`segkit.training.preemption.Preemption`
  saved ``last.ckpt`` first) and the worker marked it preempted;
- its worker ran on this host and its process is gone (killed, crashed);
- its heartbeat is older than the grace period (a worker on another host, lost with its node).

Continuing means running the trial's job again in its own directory: segkit-train resumes from
the trial's ``last.ckpt`` (``ckpt_path=auto``), exactly. Two workers never continue the same
trial: each continuation is claimed by creating a file named after the trial and the number of
its continuations with ``O_EXCL``, which succeeds for one process only (NFS v3+ included).

Example:
    >>> import tempfile
    >>> claims = Path(tempfile.mkdtemp())
    >>> claim(claims, "trial_3.1"), claim(claims, "trial_3.1")
    (True, False)
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

OWNER = "segkit:owner"
HEARTBEAT = "segkit:heartbeat"
PREEMPTED = "segkit:preempted"
CONTINUATIONS = "segkit:continuations"
SECONDS = "segkit:seconds"


def this_process() -> dict[str, Any]:
    """The owner record of a trial run here: host, pid, and SLURM job when there is one."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": os.environ.get("SLURM_JOB_ID")}


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/<pid>/stat: "pid (name) state ...", the name may hold spaces and parentheses.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_orphan(attrs: dict[str, Any], started: float, now: float, grace_s: float) -> bool:
    """Whether a RUNNING trial with system attributes ``attrs`` (started at ``started``, epoch
    seconds) has no live worker."""
    if attrs.get(PREEMPTED):
        return True
    owner = attrs.get(OWNER)
    if owner is None:  # asked, then its worker died before marking it
        return now - started > grace_s
    if owner.get("host") == socket.gethostname():
        return not process_alive(int(owner["pid"]))
    return now - float(attrs.get(HEARTBEAT, started)) > grace_s


def claim(claims_dir: Path, name: str) -> bool:
    """Create ``claims_dir/name`` if no process did: True for exactly one caller (e.g. the
    ``k``-th continuation of trial ``n``: ``trial_<n>.<k>``)."""
    claims_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(claims_dir / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as file:
        file.write(f"{this_process()}\n")
    return True


class Heartbeat:
    """Refresh a trial's heartbeat every ``interval_s`` seconds in a daemon thread while in the block."""

    def __init__(self, storage: Any, trial_id: int, interval_s: float) -> None:
        self.storage, self.trial_id, self.interval_s = storage, trial_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="segkit-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT, time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT, time.time())
            except Exception:  # the trial finished meanwhile, or the storage blinked: try next time
                pass
