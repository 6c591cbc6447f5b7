"""Power for the payload: the real ``onboard run --port`` process, started, cut and restarted.

The payload runs exactly as on the flight computer: ``python -m onboard run --port PORT
--config MISSION.toml --replay DROP --out OUT`` in its own process (its own session, its own
pyserial port). A power cut is SIGKILL: no handler runs, nothing is flushed, as when the
supply drops. Power back starts the same command again. The end of a scenario is SIGTERM
(the clean stop of onboard/runtime/payload.py), and the exit status is recorded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class PayloadProcess:
    """One payload computer; ``boots`` counts starts, ``crashes`` unexpected exits."""

    def __init__(self, port: str, config: Path, drop: Path, out: Path, log: Path) -> None:
        self.command = [sys.executable, "-m", "onboard", "run", "--port", port,
                        "--config", str(config), "--replay", str(drop), "--out", str(out),
                        "--quiet", "--json", str(out / "payload-summary.json")]
        self.log_path = log
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        self.kills = 0
        self.crashes: list[int] = []  # exit codes of exits nobody asked for
        self.exit_code: int | None = None

    def on(self) -> None:
        """Power on: start the payload process."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            log.write(f"--- boot {self.boots + 1} at {time.time():.3f}\n".encode())
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        self.boots += 1

    def cut(self) -> None:
        """Power cut: SIGKILL, no clean-up of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.kills += 1
        self.proc = None

    def check(self) -> bool:
        """True while the process runs; an exit nobody asked for is recorded as a crash."""
        if self.proc is None:
            return False
        code = self.proc.poll()
        if code is None:
            return True
        self.crashes.append(code)
        self.proc = None
        return False

    def stop(self, timeout: float = 30.0) -> int | None:
        """The clean stop (SIGTERM); SIGKILL if it does not end within ``timeout``."""
        if self.proc is None:
            return self.exit_code
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.exit_code = self.proc.returncode
        self.proc = None
        return self.exit_code
