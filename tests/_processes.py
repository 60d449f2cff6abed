"""Test helper: run a command and SIGKILL it at a chosen point (the fault and resume tests)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence


def kill_when(command: Sequence[str], ready: Callable[[], bool], delay: float,
              env: Mapping[str, str], timeout: float = 120) -> None:
    """Start ``command``, wait until ``ready()``, sleep ``delay`` s, SIGKILL it (it must still run)."""
    proc = subprocess.Popen(list(command), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, f"never reached the kill point in {timeout:.0f} s"
            time.sleep(0.01)
        time.sleep(delay)
        assert proc.poll() is None, "finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


@contextlib.contextmanager
def running(command: Sequence[str], ready: Callable[[], bool], env: Mapping[str, str],
            timeout: float = 120) -> Iterator[subprocess.Popen]:
    """Start ``command``, wait until ``ready()``, yield the process while it still runs; SIGKILL it afterwards."""
    proc = subprocess.Popen(list(command), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, f"never became ready in {timeout:.0f} s"
            time.sleep(0.01)
        yield proc
        assert proc.poll() is None, "finished while it was meant to be running"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
