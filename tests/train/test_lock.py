import json
import os
import socket
import subprocess
import sys

import pytest

from implicit_jax.train.lock import LOCK_NAME, RunLock, RunLockedError


def write_lock(folder, **holder):
    folder.mkdir(exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps(holder))


def dead_pid() -> int:
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(process.stdout)


def test_a_live_run_holds_the_workdir_until_it_ends(tmp_path):
    with RunLock(str(tmp_path)):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunLockedError, match=rf"in use by a run with PID {os.getpid()} on this host"):
            RunLock(str(tmp_path)).acquire()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_stale_or_unreadable_lock_is_taken_over_with_a_warning(tmp_path):
    write_lock(tmp_path, pid=dead_pid(), host=socket.gethostname(), started="earlier")
    with pytest.warns(RuntimeWarning, match="taking over a stale lock of PID"), RunLock(str(tmp_path)):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    (tmp_path / LOCK_NAME).write_text('{"pid": 12')  # torn
    with pytest.warns(RuntimeWarning, match="taking over an unreadable lock"):
        RunLock(str(tmp_path)).acquire()


def test_a_lock_of_another_host_is_refused_naming_it(tmp_path):
    write_lock(tmp_path, pid=1, host="node-17", started="2026-12-06 01:00:00")
    with pytest.raises(RunLockedError, match=r"PID 1 on host node-17 \(started 2026-12-06 01:00:00\).*delete"):
        RunLock(str(tmp_path)).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == "node-17"  # untouched
