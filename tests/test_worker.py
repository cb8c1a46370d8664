"""The helper process behind graded comparisons (purerl.grading.worker): a fresh interpreter, not a fork."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time

import pytest

from purerl.grading.worker import Worker, WorkerTimeout


def _pid() -> int:
    return os.getpid()


def _cmdline() -> str:
    with open("/proc/self/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def _fail(message: str) -> None:
    raise ValueError(message)


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.fixture()
def worker():
    w = Worker()
    yield w
    w.stop()


def test_the_helper_is_a_fresh_interpreter_not_a_fork(worker):
    assert worker.call(_pid, (), 30) != os.getpid()
    if os.path.exists("/proc/self/cmdline"):
        assert "purerl.grading.worker import serve" in worker.call(_cmdline, (), 30)


def test_results_exceptions_and_time_outs(worker):
    assert worker.call(sum, ([1, 2, 3],), 30) == 6
    with pytest.raises(ValueError, match="bad input"):
        worker.call(_fail, ("bad input",), 30)
    first = worker.call(_pid, (), 30)
    start = time.monotonic()
    with pytest.raises(WorkerTimeout):
        worker.call(_sleep, (30.0,), 0.5)
    assert time.monotonic() - start < 5
    assert worker.call(_pid, (), 30) != first  # killed and replaced
    assert worker.call(_sleep, (0.01,), 30) == 0.01


def test_a_helper_killed_between_calls_is_replaced(worker):
    first = worker.call(_pid, (), 30)
    os.kill(first, signal.SIGKILL)
    time.sleep(0.2)
    assert worker.call(_pid, (), 30) not in (first, os.getpid())


def test_a_helper_killed_during_a_call_is_a_time_out(worker):
    pid = worker.call(_pid, (), 30)
    worker._send((_sleep, (30.0,)))
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerTimeout, match="died"):
        worker._receive(30)
    assert worker.call(sum, ([2, 2],), 30) == 4


def test_a_function_the_helper_cannot_import_is_an_error_not_a_hang(worker):
    def local():  # not importable by reference
        return 1

    with pytest.raises(Exception, match="local"):
        worker.call(local, (), 30)
    assert worker.call(sum, ([1],), 30) == 1


def test_a_print_in_the_helper_does_not_break_the_answers(worker):
    assert worker.call(print, ("stray output",), 30) is None
    assert worker.call(sum, ([5],), 30) == 5


def test_the_time_limit_starts_when_the_call_starts_even_beside_a_cpu_hog(tmp_path, monkeypatch, cpu_hog):
    """A cold helper, a function whose module takes 2 s to import, a busy process per CPU: calls of
    0.01 s still finish within limits of 0.5 to 1 s (the helper's start and the import are not the
    call's), and a call past its limit is still stopped."""
    (tmp_path / "slow_to_import.py").write_text("import time\n\ntime.sleep(2)\n\n\ndef twice(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    slow = importlib.import_module("slow_to_import")
    worker = Worker()  # no warm-up: the first call starts the helper
    try:
        assert worker.call(slow.twice, (21,), 0.5) == 42
        for _ in range(5):
            assert worker.call(_sleep, (0.01,), 1.0) == 0.01
        start = time.monotonic()
        with pytest.raises(WorkerTimeout, match=r"no answer within 0\.3 s"):
            worker.call(_sleep, (10.0,), 0.3)
        assert time.monotonic() - start < 8
        assert worker.call(slow.twice, (2,), 0.5) == 4  # the replacement imports it again, off the clock
    finally:
        worker.stop()
        sys.modules.pop("slow_to_import", None)
