"""The side of a run that executes inside the script's own process: limits, and the zygote.

This file is standard library only and imports nothing of servicebay: the zygote runs it
with a deployment's interpreter, where the platform's packages are not installed (its
text arrives as the first packet on the zygote's socket, see `zygote.py`). `process.py`
imports `apply_limits` from here, so a script started by `run_process` and one forked by
the zygote get the very same limits.

The zygote (`main`) starts, imports the modules it was asked to preload, says it is
ready, and then serves requests on the Unix socket it inherited (SOCK_SEQPACKET: one
JSON object per packet). A request carries a run's argv, cwd, environment and memory
limit, with the write ends of its stdout and stderr pipes attached (SCM_RIGHTS). For each
the zygote forks a child that becomes the script: its own process group, exactly the
run's environment, the limits, the pipes as stdout and stderr, `/dev/null` as stdin, and
then `runpy.run_path(script, run_name="__main__")`. The zygote answers with the child's
pid at once and with its wait status when it ends. It never runs a script itself, so
nothing a script does at module level survives into the next run: each is a fresh fork.
The zygote exits when the platform closes the socket.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import io
import json
import os
import pkgutil  # noqa: F401 - runpy imports it for every run; so, once, here
import resource
import runpy
import selectors
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

UMASK = 0o077
"""Files a script creates are its own: not readable by other deployments' users."""

PACKET_BYTES = 1 << 20
"""The largest request packet the zygote reads: argv and environment of one run."""

RECEIVED_FDS = 2
"""A request carries exactly two descriptors: the run's stdout and stderr pipes."""


def apply_limits(memory_bytes: int | None, process_limit: int | None) -> None:
    """Set the rlimits of the calling process (and so of everything it starts).

    No core dumps (a dump could hold a script's secrets and fill the disk); address space
    capped at `memory_bytes`; at most `process_limit` processes and threads for the whole
    user, which bounds a fork bomb. Limits are only ever lowered, never raised above the
    current hard limit, so this works unprivileged.
    """
    _lower(resource.RLIMIT_CORE, 0)
    if memory_bytes is not None:
        _lower(resource.RLIMIT_AS, memory_bytes)
    if process_limit is not None:
        _lower(resource.RLIMIT_NPROC, process_limit)


def _lower(limit: int, value: int) -> None:
    _, hard = resource.getrlimit(limit)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(limit, (value, value))


def main(argv: Sequence[str]) -> None:
    """`argv` is [control socket fd, JSON list of modules to preload]."""
    control = socket.socket(fileno=int(argv[0]))
    # `python -c` puts the working directory (the deployment's folder) first on sys.path:
    # drop it, so that preloading never imports the deployment's own files into the zygote.
    if sys.path and sys.path[0] == "":
        del sys.path[0]
    preloaded, failed = _preload(json.loads(argv[1]))
    # Keep the preloaded objects out of the children's garbage collections: collecting
    # would write to (and so copy) every page the children share with the zygote.
    gc.freeze()
    _send(control, {"ready": {"pid": os.getpid(), "preloaded": preloaded, "failed": failed}})
    Zygote(control).serve()


def _preload(modules: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Import what most runs import, once, so that forks find it already loaded."""
    preloaded: list[str] = []
    failed: dict[str, str] = {}
    for name in modules:
        try:
            __import__(name)
        except Exception as error:  # a missing optional module must not stop the zygote
            failed[name] = f"{type(error).__name__}: {error}"
        else:
            preloaded.append(name)
    return preloaded, failed


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.sendall(json.dumps(message).encode())


class Zygote:
    """The request loop: one control socket, and a pidfd per running child."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.selector = selectors.DefaultSelector()
        self.selector.register(control, selectors.EVENT_READ)
        self.children: dict[int, tuple[int, object]] = {}
        """pidfd -> (child pid, the platform's run id)."""

    def serve(self) -> None:
        while True:
            for key, _ in self.selector.select():
                if key.fileobj is self.control:
                    if not self._take_request():
                        return
                else:
                    self._reap(int(key.fd))

    def _take_request(self) -> bool:
        """Read one request and fork its child; False when the platform has gone."""
        try:
            data, fds, _, _ = socket.recv_fds(self.control, PACKET_BYTES, RECEIVED_FDS)
        except ConnectionResetError:
            return False
        if not data:
            return False
        request = json.loads(data)
        run_id = request["id"]
        try:
            if len(fds) != RECEIVED_FDS:
                raise OSError(f"expected {RECEIVED_FDS} pipe descriptors, got {len(fds)}")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
        except OSError as error:  # EAGAIN at the process limit, ENOMEM...
            _close(fds)
            _send(self.control, {"id": run_id, "error": f"cannot fork the script: {error}"})
            return True
        if pid == 0:
            self._become_child(request, fds)
        _close(fds)
        # Set the group from both sides, so it exists before the platform learns the pid.
        with contextlib.suppress(OSError):  # the child got there first, or has exited
            os.setpgid(pid, pid)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (pid, run_id)
        self.selector.register(pidfd, selectors.EVENT_READ)
        _send(self.control, {"id": run_id, "pid": pid})
        return True

    def _reap(self, pidfd: int) -> None:
        pid, run_id = self.children.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        _send(self.control, {"id": run_id, "status": status})

    def _become_child(self, request: dict[str, Any], fds: list[int]) -> NoReturn:
        """In the fork: shed the zygote, become the script, and end the process."""
        try:
            os.setpgid(0, 0)
            null = os.open(os.devnull, os.O_RDONLY)
            for source, target in ((null, 0), (fds[0], 1), (fds[1], 2)):
                os.dup2(source, target)
            _close([null, *fds, *self.children])
            self.selector.close()
            self.control.close()
            os.umask(UMASK)
            apply_limits(request["memory_bytes"], None)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            # Unbuffered, whatever the zygote's own environment said: logs stream live.
            for stream in (sys.stdout, sys.stderr):
                if isinstance(stream, io.TextIOWrapper):
                    stream.reconfigure(write_through=True)
        except BaseException as error:
            os.write(2, f"servicebay: cannot start the script: {error}\n".encode())
            os._exit(127)
        os._exit(_finish(_run_script(request["argv"])))


def _run_script(argv: list[str]) -> object:
    """Run the script as `python script args...` would; the result is a SystemExit code."""
    script = os.path.abspath(argv[0])
    try:
        with open(script, "rb"):
            pass
    except OSError as error:
        print(f"python: can't open file {script!r}: {error}", file=sys.stderr)
        return 2
    sys.argv = [script, *argv[1:]]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as leaving:
        return leaving.code
    except BaseException as error:
        # Show the traceback from the script's first frame, as the interpreter would.
        trace = error.__traceback__
        while trace is not None and trace.tb_frame.f_code.co_filename != script:
            trace = trace.tb_next
        sys.excepthook(type(error), error, error.with_traceback(trace).__traceback__)
        if isinstance(error, KeyboardInterrupt):
            # Die of SIGINT, as CPython does, so the platform sees the real cause.
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        return 1
    return None


def _finish(code: object) -> int:
    """End as the interpreter does, but without tearing down every module and object.

    The exit code is read as SystemExit's (a message is printed at once), non-daemon
    threads are joined, atexit handlers run (logging flushes its files). The teardown that
    is skipped would touch every page inherited from the zygote, which costs more than the
    whole run of a small script.
    """
    status = 0
    if isinstance(code, int):
        status = code & 0xFF
    elif code is not None:
        print(code, file=sys.stderr)
        status = 1
    main = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream has nothing to flush
            stream.flush()
    return status


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)


if __name__ == "__main__":
    main(sys.argv[1:])
