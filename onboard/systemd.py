"""systemd's service protocol: readiness, status, start-up extensions and the watchdog.

Under ``Type=notify`` systemd hands the service an ``AF_UNIX`` datagram socket in
``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace) and, with ``WatchdogSec=``,
the watchdog period in ``WATCHDOG_USEC`` (and the process meant in ``WATCHDOG_PID``). A
message is newline-separated ``KEY=VALUE`` fields in one datagram: ``READY=1`` ends the
start-up, ``STATUS=...`` is what ``systemctl status`` shows, ``EXTEND_TIMEOUT_USEC=...``
pushes the start-up timeout out while a long first start (a TensorRT plan build) makes
progress, ``WATCHDOG=1`` is the keep-alive ping and ``STOPPING=1`` announces a clean stop.

Why the few lines here and not a library: the protocol is one ``sendto`` that systemd
documents as stable and meant to be reimplemented (sd_notify(3)); the PyPI ``sdnotify``
package does the same in a module unchanged since 2017 and would be one more flight
dependency, and ``systemd-python`` needs libsystemd's headers to build on the Jetson.

**The watchdog follows the frame loop, not the process.** A thread that pings on a timer
would keep pinging while the frame loop hangs (a wedged driver call, a deadlock), so
:class:`Watchdog` pings only while the loop reports progress (:meth:`Watchdog.progress`,
called between frames and on every idle poll) and its last progress is younger than
``hang_s``. A slow frame, even many times its deadline, is not a hang as long as it ends
within ``hang_s``: the pings go on and the loop's own degradation deals with it. A frame that
takes longer stops the pings, and systemd aborts the service ``WatchdogSec`` after the last
one (``WatchdogSignal=``, SIGABRT by default) and restarts it (``Restart=on-failure``).
Outside systemd (no ``NOTIFY_SOCKET``) every call here does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def notify(*fields: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``fields`` (``"KEY=VALUE"``) to systemd in one datagram. False when there is no
    notify socket (not started by systemd) or it cannot be reached; never raises, so the
    payload never stops because its supervisor's socket went away."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET %r is neither a path nor an abstract socket: not notified", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", env["NOTIFY_SOCKET"], exc)
        return False
    return True


def watchdog_period_s(environ: Mapping[str, str] | None = None) -> float | None:
    """systemd's watchdog period for this process (``WATCHDOG_USEC``), None when the service has
    no watchdog or it is meant for another process (``WATCHDOG_PID``)."""
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6


class Watchdog:
    """Pings systemd's watchdog every ``period_s / 2`` while the frame loop's last progress is
    at most ``hang_s`` old (see the module's docstring). ``period_s`` None: no watchdog (the
    pinging thread is not started; :meth:`ready` and :meth:`stopping` still notify)."""

    def __init__(self, hang_s: float, period_s: float | None,
                 send: Callable[..., bool] = notify,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not hang_s > 0:
            raise ValueError(f"hang_s must be > 0, got {hang_s}")
        self.hang_s = hang_s
        self.period_s = period_s
        self._send = send
        self._clock = clock
        self._last = clock()
        self._hung_reported = False
        self.pings = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_environment(cls, hang_s: float) -> Watchdog:
        return cls(hang_s, watchdog_period_s())

    def progress(self) -> None:
        """The frame loop is alive: a frame ended, or the idle loop went round."""
        self._last = self._clock()

    def stalled_s(self) -> float:
        """Seconds since the last progress."""
        return self._clock() - self._last

    def tick(self) -> bool:
        """One ping if the loop made progress within ``hang_s`` (True), else none, and the hang
        logged and put in systemd's status once."""
        stalled = self.stalled_s()
        if stalled <= self.hang_s:
            self._hung_reported = False
            self.pings += 1
            return self._send("WATCHDOG=1")
        if not self._hung_reported:
            self._hung_reported = True
            what = (f"frame loop without progress for {stalled:.0f} s (hang_s = {self.hang_s:g}):"
                    " the watchdog is no longer pinged")
            log.error(what)
            self._send(f"STATUS={what}")
        return False

    def ready(self, status: str) -> None:
        """Start-up done: systemd starts the watchdog now; start pinging."""
        self.progress()
        self._send("READY=1", f"STATUS={status}")
        if self.period_s is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s / 2 if self.period_s else 1.0):
            self.tick()

    def stopping(self, status: str) -> None:
        """A clean stop has begun: stop pinging and tell systemd."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._send("STOPPING=1", f"STATUS={status}")
