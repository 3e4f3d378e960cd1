"""uvicorn with a drain on SIGTERM, as Kubernetes expects of a pod that is being stopped:

1. SIGTERM (or SIGINT): readiness answers 503 and every new request gets 503 `shutting_down` with
   `Connection: close`, for `MEDSCAN_SHUTDOWN_DRAIN_S`, so load balancers take the pod out of rotation;
2. then uvicorn's graceful shutdown: no new connections, in-flight requests finish (up to a timeout),
   the lifespan closes the batchers, and the process exits with code 0.

uvicorn alone re-raises the signal after its shutdown, which makes the exit code 143; a clean,
requested stop should say 0. A second signal stops at once.

With several workers (`MEDSCAN_WORKERS`), uvicorn's process manager sends SIGTERM to each worker, and each
worker drains the same way before it exits; the manager exits once they all have.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn
from uvicorn.supervisors import multiprocess

log = logging.getLogger("medscan.server")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ShutdownGate:
    """Set when a stop was asked for; read by readiness and by the request middleware."""

    def __init__(self) -> None:
        self.draining = False
        GATES.append(self)  # a worker process's server finds its app's gate here

    def begin(self) -> None:
        self.draining = True


GATES: list[ShutdownGate] = []  # the gates of the apps in this process


def begin_draining() -> None:
    for gate in GATES:
        gate.begin()


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain_s: float, on_drain: Callable[[], None]) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self.on_drain = on_drain
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:  # a second signal: stop now
            self.should_exit = self.force_exit = True
            return
        self._draining = True
        self.on_drain()
        log.info("stop requested: draining for %.1f s, then finishing in-flight requests", self.drain_s)
        if self.drain_s > 0:
            timer = threading.Timer(self.drain_s, self._exit)
            timer.daemon = True
            timer.start()
        else:
            self._exit()

    def _exit(self) -> None:
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's own version re-raises the signal after shutdown (exit code 143); this one does not.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class DrainingProcess(multiprocess.Process):
    """One worker of several, whose server drains as a single process's does (uvicorn's plain Server
    stops at once: readiness never said 503 before the worker went away)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            from app.settings import get_settings

            self._server = DrainingServer(self.config, get_settings().shutdown_drain_s, begin_draining)
        return self._server


def run_workers(config: uvicorn.Config) -> None:
    """uvicorn's process manager (restarts a worker that dies) with draining workers. Its Process class is
    swapped for the run: the manager makes workers in three places, each by that module-level name."""
    sock = config.bind_socket()
    original = multiprocess.Process
    multiprocess.Process = DrainingProcess  # type: ignore[misc]
    try:
        multiprocess.Multiprocess(config, sockets=[sock]).run()
    finally:
        multiprocess.Process = original  # type: ignore[misc]
