"""firmware_bridge.stopping: the flag and the callbacks that cut short a blocked wait."""

from __future__ import annotations

import os
import signal

from firmware_bridge.stopping import StopRequest, stop_on_signals


def test_callbacks_run_once_on_the_first_request_and_at_once_when_late() -> None:
    stop = StopRequest()
    calls: list[str] = []
    stop.on_request(lambda: calls.append("early"))
    assert not stop and calls == []
    stop.request("SIGTERM")
    stop.request("SIGINT")  # the first signal's name is kept, callbacks do not run again
    assert stop.reason == "SIGTERM" and calls == ["early"]
    stop.on_request(lambda: calls.append("late"))
    assert calls == ["early", "late"]


def test_a_signal_sets_the_flag_and_runs_the_callback() -> None:
    calls: list[str | None] = []
    with stop_on_signals() as stop:
        stop.on_request(lambda: calls.append(stop.reason))
        os.kill(os.getpid(), signal.SIGINT)
    assert calls == ["SIGINT"]
