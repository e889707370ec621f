"""One live run per workdir: a lock file holding the owner's PID and host.

Two runs writing one workdir interleave their metrics and fight over checkpoint files. A run
takes ``WORKDIR/run.lock`` before it writes anything and removes it when it ends (normally,
on an exception or on Ctrl-C). A lock whose process is gone (same host, PID not alive, or an
unreadable lock file) is stale: it is taken over with a warning. A lock held by a live
process, or by another host (whose processes cannot be checked from here), is refused with
the owner named, so the user can tell a live run from a dead one.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings

LOCK_NAME = "run.lock"


class RunLockedError(RuntimeError):
    """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class RunLock:
    """``with RunLock(workdir):`` holds ``workdir/run.lock`` for the duration of a run."""

    def __init__(self, workdir: str):
        self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
        self.owner = {"pid": os.getpid(), "host": socket.gethostname()}

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(dict(self.owner, started=time.strftime("%Y-%m-%d %H:%M:%S")), handle)
        return True

    def _holder(self) -> dict | None:
        try:
            with open(self.path) as handle:
                holder = json.load(handle)
            return holder if isinstance(holder, dict) and {"pid", "host"} <= set(holder) else None
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if self._create():
            return
        holder = self._holder()
        if holder is not None and (holder["host"] != self.owner["host"] or _alive(int(holder["pid"]))):
            where = "this host" if holder["host"] == self.owner["host"] else f"host {holder['host']}"
            raise RunLockedError(
                f"{os.path.dirname(self.path)} is in use by a run with PID {holder['pid']} on {where} "
                f"(started {holder.get('started', '?')}). Wait for it, use another --workdir, or, if that run is "
                f"dead, delete {self.path}."
            )
        described = "an unreadable lock" if holder is None else f"a stale lock of PID {holder['pid']}, which is not running"
        warnings.warn(f"{self.path}: taking over {described}.", RuntimeWarning, stacklevel=2)
        os.remove(self.path)
        if not self._create():  # another run took it in between
            raise RunLockedError(f"{os.path.dirname(self.path)} was locked by another run just now; use another --workdir.")

    def release(self) -> None:
        holder = self._holder()
        if holder is not None and holder["pid"] == self.owner["pid"] and holder["host"] == self.owner["host"]:
            os.remove(self.path)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
