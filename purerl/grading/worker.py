"""A helper process for calls that may have to be killed (math-verify comparisons, :mod:`purerl.grading`).

The helper is a fresh interpreter (``python -c "from purerl.grading.worker import serve; serve()"``; ``-m``
would warn on stderr that the package imported this module first), not a fork of the caller: a fork made
after the models are loaded shares the trainer's memory copy-on-write, and every page the trainer
writes afterwards (weights, optimizer state, activations) is copied, which made a training step about
twice as long (docs/benchmarks.md). A fresh interpreter shares nothing, starts in the background
while the caller loads its models, and never re-runs the caller's script (``spawn`` and
``forkserver`` would re-import an unguarded ``__main__``).

Protocol: the caller writes pickled ``(function, args)`` to the helper's stdin; the helper answers on
its own copy of fd 1, first ``(None, None)`` once it has unpickled the request (importing the function's
module), then ``(ok, value_or_exception)``; each message is an 8-byte length and the pickle (its
``sys.stdout`` goes to stderr, so a stray print cannot break the stream). Functions travel by
reference (module and name); the helper gets the caller's ``sys.path`` first. End of input ends the
helper.

**The time limit starts when the call starts.** A call's clock starts when the helper says it has the
function in hand: the helper's own start, its warm-up and the import of the function's module are
waited for under ``startup_seconds``, never under a call's limit, so a busy machine cannot turn a
0.01 s call into a time-out (a right answer graded wrong).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable


class WorkerTimeout(Exception):
    """The call ran past its time limit, or the helper died during it; the helper was killed."""


class Worker:
    """One helper process; :meth:`call` runs ``fn(*args)`` in it under a time limit.

    ``warmup``: a function the helper runs first (imports, caches); its time is not any call's.
    A helper killed by a time-out is replaced at once, in the background.
    """

    def __init__(self, warmup: Callable[[], object] | None = None, startup_seconds: float = 120.0):
        self.warmup, self.startup_seconds = warmup, startup_seconds
        self.proc: subprocess.Popen | None = None
        self.ready = False
        self._pending = bytearray()

    def start(self) -> None:
        """Start the helper (and its warm-up) now without waiting for it; no-op while one runs."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from purerl.grading.worker import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self.ready, self._pending = False, bytearray()
        self._send((list(sys.path), None))
        if self.warmup is not None:
            self._send((self.warmup, ()))

    def call(self, fn: Callable, args: tuple, seconds: float):
        """``fn(*args)`` in the helper; raises :class:`WorkerTimeout` when it runs past ``seconds``, counted
        from the moment the helper starts it (the helper is killed and a new one started), and re-raises
        the helper's own exception."""
        self.start()
        if not self.ready:
            self.ready = True  # a failed warm-up raises once; the call itself then reports its own error
            if self.warmup is not None:
                self._receive(self.startup_seconds, started=self.startup_seconds)
        self._send((fn, args))
        return self._receive(seconds, started=self.startup_seconds)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                stream.close()
        self.proc, self.ready = None, False

    def _send(self, message) -> None:
        with contextlib.suppress(OSError):  # the helper died: the answer never comes, and _receive reports it
            _write(self.proc.stdin, message)

    def _receive(self, seconds: float, started: float | None = None):
        """The answer to the request just sent. With ``started``: first the helper's word that it has
        started the call (within ``started`` seconds), then the answer within ``seconds`` of that; without,
        the answer within ``seconds`` of now."""
        if started is not None and self._message(started, "to start the call")[0] is not None:
            self._restart()
            raise WorkerTimeout("the helper answered out of turn")
        deadline = time.monotonic() + seconds
        ok = None
        while ok is None:  # (None, None) is the word that the call started
            ok, value = self._message(seconds, "", deadline)
        if not ok:
            raise value
        return value

    def _message(self, seconds: float, what: str, deadline: float | None = None) -> tuple:
        """The helper's next message, by ``deadline`` (default: ``seconds`` from now). Read from the pipe's
        descriptor into :attr:`_pending` (a buffered reader could hold a second message where ``select``
        cannot see it)."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + seconds if deadline is None else deadline
        while (message := _take(self._pending)) is None:
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                if time.monotonic() >= deadline:
                    self._restart()
                    raise WorkerTimeout(f"no answer within {seconds:g} s{' ' + what if what else ''}")
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self._restart()
                raise WorkerTimeout("the helper process died")
            self._pending += chunk
        try:
            return pickle.loads(message)
        except (EOFError, pickle.UnpicklingError):
            self._restart()
            raise WorkerTimeout("the helper process died") from None

    def _restart(self) -> None:
        self.stop()
        self.start()


def _write(stream, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _take(pending: bytearray) -> bytes | None:
    """Remove and return the first whole message of ``pending`` (None until one has arrived)."""
    if len(pending) < 8:
        return None
    (size,) = struct.unpack("<Q", pending[:8])
    if len(pending) < 8 + size:
        return None
    message = bytes(pending[8 : 8 + size])
    del pending[: 8 + size]
    return message


def _read(stream) -> bytes:
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError
    (size,) = struct.unpack("<Q", header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return data


def _raise(error: Exception):
    raise error


def serve() -> None:
    """The helper's loop: answer requests from stdin until it closes."""
    answers = os.fdopen(os.dup(1), "wb")
    sys.stdout = sys.stderr  # prints of the called code go to stderr, never into the answers
    requests = sys.stdin.buffer
    paths, _ = pickle.loads(_read(requests))
    sys.path[:] = paths
    while True:
        try:
            data = _read(requests)
        except EOFError:
            return
        try:
            fn, args = pickle.loads(data)  # imports the function's module: before the call's clock starts
        except Exception as error:
            fn, args = _raise, (error,)
        _write(answers, (None, None))  # started: the caller's time limit counts from here
        try:
            answer = (True, fn(*args))
        except Exception as error:  # handed back to the caller, which re-raises it
            answer = (False, error)
        try:
            _write(answers, answer)
        except Exception as error:  # an answer (or error) that cannot be pickled
            _write(answers, (False, RuntimeError(f"unpicklable answer or error from the helper: {error}")))


if __name__ == "__main__":
    serve()
