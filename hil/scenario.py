"""HIL scenarios: one TOML file says what the world around the payload does and what must hold.

Format (every key optional unless marked; times in seconds from the scenario's start)::

    name = "nominal"                 # required
    description = "..."
    duration_s = 60                  # hard limit; the run ends earlier once all is delivered
    seed = 0

    [payload]                        # the payload's mission TOML (onboard/config.py sections)
    products = { cube = false }      # e.g. keep CI frames small

    [sensor]                         # the sensor feeder
    frames = 4                       # frames written into the payload's drop folder
    rate_hz = 1.0                    # at this rate
    start_s = 2.0                    # from this time
    corrupt = [2]                    # counters written damaged (truncated image)
    saturate = []                    # counters written fully saturated
    at_s = []                        # or: each frame's time (as many as frames), e.g. between passes

    [link]                           # the emulated radio/UART between payload and flight computer
    bytes_per_s = 11520
    latency_s = 0.0
    bit_error_rate = 0.0
    frame_drop = 0.0
    cuts = [{ at_s = 5, duration_s = 3 }]
    passes = [{ at_s = 0, duration_s = 25 }]   # or: the link is up only in these windows (cut
                                     # between them) and the payload is told them by SET_PASSES
    announce_passes = true           # false: the payload is not told (it sends whenever it can)

    [[commands]]                     # telecommands from the flight computer
    at_s = 0.5                       # required
    type = "SET_MODE"                # required: PING SET_MODE START_CAPTURE STOP_CAPTURE
                                     #   SET_CONFIG REQUEST_PRODUCT ABORT SET_PASSES
                                     #   (passes = [{in_s, for_s, rate_bit_s}], from when sent)
    args = { mode = "OPERATE" }      # the message's fields
    auth = "valid"                   # valid | none | forged | replay | garbage | leaked
    repeat = 1                       # how many (a storm: repeat = 500)
    interval_s = 0.0                 # between repeats

    [[power]]                        # power cuts: SIGKILL, then power back after off_s
    at_s = 8
    off_s = 1.0
    mid_transfer = false             # true: from at_s, wait (up to wait_s) for a transfer in
    wait_s = 10.0                    #   flight on the ground before cutting; later events wait too

    [faults]                         # faults of the payload's own files
    corrupt_models = ["denoiser.fp32.onnx"]   # bytes flipped in a copy of the shipped bundle
    corrupt_calibration = false      # the payload gets a calibration file of random bytes

    [criteria]                       # each one given is checked; see hil/report.py
    all_products_delivered = true
    residue_every_frame = true
    max_corrupt = 0
    max_duplicated = 0
    max_latency_p95_s = 30
    min_degrade_events = 0
    max_deadline_misses = 1000
    max_peak_rss_mb = 400
    damaged_frames_reported = true
    valid_commands_accepted = true
    max_bad_commands_accepted = 0
    payload_survives = true
    engine_in_use = ["denoiser.int8.onnx"]   # substrings of the payload's HEALTH "engine"

A wrong key, a wrong type or an unknown name is refused with a message naming it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge.messages import Mode, MsgType
from onboard.config import check_scalar, read_toml
from onboard.errors import OnboardError

AUTH_KINDS = ("valid", "none", "forged", "replay", "garbage", "leaked")


class ScenarioError(OnboardError, ValueError):
    """A scenario file that cannot be run; the message names the key."""


@dataclass
class SensorSpec:
    frames: int = 4
    rate_hz: float = 1.0
    start_s: float = 1.0
    corrupt: list[int] = field(default_factory=list)
    saturate: list[int] = field(default_factory=list)
    at_s: list[float] = field(default_factory=list)


@dataclass
class Cut:
    at_s: float
    duration_s: float


@dataclass
class LinkSpec:
    bytes_per_s: float = 11520.0
    latency_s: float = 0.0
    bit_error_rate: float = 0.0
    frame_drop: float = 0.0
    cuts: list[Cut] = field(default_factory=list)
    passes: list[Cut] = field(default_factory=list)
    announce_passes: bool = True

    def pass_cuts(self, until_s: float) -> list[Cut]:
        """The outages between ``passes`` (and after the last, until ``until_s``); with no
        passes, the link is never up."""
        cuts, up_to = [], 0.0
        for p in self.passes:
            if p.at_s > up_to:
                cuts.append(Cut(up_to, p.at_s - up_to))
            up_to = p.at_s + p.duration_s
        return [*cuts, Cut(up_to, max(until_s - up_to, 1.0))]


@dataclass
class CommandSpec:
    at_s: float
    type: str
    args: dict[str, Any] = field(default_factory=dict)
    auth: str = "valid"
    repeat: int = 1
    interval_s: float = 0.0


@dataclass
class PowerCut:
    at_s: float
    off_s: float = 1.0
    #: cut only once the ground has a transfer open (from at_s, for up to wait_s): a scenario
    #: about a cut mid-downlink must not depend on where the link happens to be at at_s
    mid_transfer: bool = False
    wait_s: float = 10.0


@dataclass
class FaultSpec:
    corrupt_models: list[str] = field(default_factory=list)
    corrupt_calibration: bool = False


@dataclass
class Criteria:
    all_products_delivered: bool | None = None
    residue_every_frame: bool | None = None
    max_corrupt: int | None = None
    max_duplicated: int | None = None
    max_latency_p95_s: float | None = None
    min_degrade_events: int | None = None
    max_deadline_misses: int | None = None
    max_peak_rss_mb: float | None = None
    damaged_frames_reported: bool | None = None
    valid_commands_accepted: bool | None = None
    max_bad_commands_accepted: int | None = None
    payload_survives: bool | None = None
    engine_in_use: list[str] | None = None
    max_forecast_error: float | None = None  # |received - forecast| / forecast bytes, each pass
    summaries_by_next_pass: bool | None = None  # every frame's summary down by the next pass's end
    no_silent_loss: bool | None = None  # every product delivered, still queued, or evicted with an event


@dataclass
class Scenario:
    name: str
    description: str = ""
    duration_s: float = 60.0
    seed: int = 0
    payload: dict[str, Any] = field(default_factory=dict)
    sensor: SensorSpec = field(default_factory=SensorSpec)
    link: LinkSpec = field(default_factory=LinkSpec)
    commands: list[CommandSpec] = field(default_factory=list)
    power: list[PowerCut] = field(default_factory=list)
    faults: FaultSpec = field(default_factory=FaultSpec)
    criteria: Criteria = field(default_factory=Criteria)
    path: str = ""


def _value(where: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return None if value is None else _value(where, value, typing.get_args(hint)[0])
    if origin is list:
        if not isinstance(value, list):
            raise ScenarioError(f"{where}: expected a list, got {value!r}")
        (inner,) = typing.get_args(hint)
        return [_value(f"{where}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ScenarioError(f"{where}: expected a table, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return _build(where, value, hint)
    return check_scalar(where, value, hint, ScenarioError)


def _build(where: str, data: Any, cls: type) -> Any:
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ScenarioError(f"{where}: unknown key {unknown[0]!r}; accepted: {', '.join(fields)}")
    missing = [n for n, f in fields.items() if n not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ScenarioError(f"{where}: missing required key {missing[0]!r}")
    return cls(**{k: _value(f"{where}.{k}" if where else k, v, hints[k]) for k, v in data.items()})


def _check(s: Scenario) -> None:
    if s.duration_s <= 0:
        raise ScenarioError(f"duration_s must be > 0, got {s.duration_s}")
    if s.sensor.frames < 0 or s.sensor.rate_hz <= 0:
        raise ScenarioError("sensor.frames must be >= 0 and sensor.rate_hz > 0")
    if s.sensor.at_s and (len(s.sensor.at_s) != s.sensor.frames or s.sensor.at_s != sorted(s.sensor.at_s)):
        raise ScenarioError("sensor.at_s: one time per frame (sensor.frames of them), in order")
    for i, c in enumerate(s.commands):
        where = f"commands[{i}]"
        if c.type not in MsgType.__members__ or MsgType[c.type].direction.value != "TC":
            tcs = [t.name for t in MsgType if t.direction.value == "TC"]
            raise ScenarioError(f"{where}.type {c.type!r} is not a telecommand; one of {', '.join(tcs)}")
        if c.auth not in AUTH_KINDS:
            raise ScenarioError(f"{where}.auth {c.auth!r}: one of {', '.join(AUTH_KINDS)}")
        if c.repeat < 1 or c.interval_s < 0:
            raise ScenarioError(f"{where}: repeat must be >= 1 and interval_s >= 0")
        if c.type == "SET_MODE" and c.args.get("mode") not in Mode.__members__:
            raise ScenarioError(f"{where}.args.mode: one of {', '.join(Mode.__members__)}")
    for i, p in enumerate(s.power):
        if p.at_s < 0 or p.off_s < 0 or p.wait_s < 0:
            raise ScenarioError(f"power[{i}]: at_s, off_s and wait_s must be >= 0")
    for i, cut in enumerate(s.link.cuts):
        if cut.duration_s <= 0:
            raise ScenarioError(f"link.cuts[{i}].duration_s must be > 0")
    if s.link.passes and s.link.cuts:
        raise ScenarioError("link: give cuts or passes (the link is cut between passes), not both")
    for i, a in enumerate(s.link.passes):
        if a.at_s < 0 or a.duration_s <= 0:
            raise ScenarioError(f"link.passes[{i}]: at_s must be >= 0 and duration_s > 0")
        if i + 1 < len(s.link.passes) and s.link.passes[i + 1].at_s < a.at_s + a.duration_s:
            raise ScenarioError(f"link.passes[{i + 1}] starts before link.passes[{i}] ends: in order, apart")


def from_dict(data: dict[str, Any], path: str = "") -> Scenario:
    """A checked Scenario from a TOML document's dict."""
    scenario = _build("", {**data, "path": path}, Scenario)
    _check(scenario)
    return scenario


def load(path: str | Path) -> Scenario:
    """Read and check a scenario file; ScenarioError says what is wrong and where."""
    p = Path(path)
    data = read_toml(p, ScenarioError, "scenario file")
    try:
        return from_dict(data, str(p))
    except ScenarioError as exc:
        raise ScenarioError(f"{p}: {exc}") from None
