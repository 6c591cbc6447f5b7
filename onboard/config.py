"""Mission configuration: one TOML file that can set everything the defaults set.

Each section is a dataclass; its fields are the keys the section accepts, with their types
and defaults. Loading refuses unknown sections and keys and values of the wrong type or out
of range, naming the key (``[imspoc] n_bands: expected int >= 5, got 'many'``); nothing is
guessed or silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

from firmware_bridge.passes import Pass, PlanError, parse_passes
from onboard.errors import OnboardError
from onboard.stages.value import ValueRule
from onboard.threads import DEFAULT_THREADS


class ConfigError(OnboardError, ValueError):
    """A configuration that cannot be used; the message names the key."""


def _check(section: str, key: str, value: Any, hint: Any) -> Any:
    """Check one value against its type hint (int, float, bool, str, Optional, Literal)."""
    origin = typing.get_origin(hint)
    where = f"[{section}] {key}"
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: expected one of {typing.get_args(hint)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _check(section, key, value, args[0])
    return check_scalar(where, value, hint, ConfigError)


def check_scalar(where: str, value: Any, hint: type, error: type[Exception]) -> Any:
    """``value`` as the scalar type ``hint`` (int, float, bool, str): an int is taken as a float,
    a bool is not an int, and a float must be finite (TOML allows ``nan`` and ``inf``, and
    NaN passes every ``<=`` range check: ``deadline_s = nan`` would turn the deadline guard
    off); anything else raises ``error`` naming ``where``. Shared with the HIL scenario loader
    so every TOML input refuses a value in the same words."""
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (hint is int and isinstance(value, bool)) or not isinstance(value, hint):
        raise error(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise error(f"{where}: expected a finite float, got {value!r}")
    return value


def read_toml(path: str | Path, error: type[Exception], what: str) -> dict[str, Any]:
    """The TOML document at ``path``; ``error`` says the ``what`` (e.g. "scenario file") is
    missing or not TOML. Shared with the HIL scenario loader, for the same reason."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid TOML: {exc}") from exc


def _positive(section: str, **values: float | None) -> None:
    for key, v in values.items():
        if v is not None and v <= 0:
            raise ConfigError(f"[{section}] {key}: must be > 0, got {v}")


@dataclass
class RunConfig:
    sensor: typing.Literal["imspoc", "pushbroom"] = "imspoc"
    frames: int = 5
    out: str = "onboard-out"
    seed: int = 0
    deadline_s: float = 2.0
    health_period_s: float = 10.0
    calibration: str | None = None
    replay: str | None = None  # folder of recorded frames (onboard/sources/replay.py) instead of the simulator
    scene: str | None = None  # a real reflectance cube (.npz, onboard/sources/scene.py) instead of the farmland
    record: str | None = None  # also record every raw frame into this folder
    bundle: str | None = None
    #: free space (MB) every write keeps on the output's file system: archive copies are shed,
    #: then low-priority products (firmware_bridge/storage.py)
    disk_floor_mb: float = 4.0
    #: threads of each compute pool (BLAS, ONNX Runtime), spinning off; 0: the libraries' own
    #: defaults, a thread per core, spinning (onboard/threads.py). [engine] *_op_threads win
    threads: int = DEFAULT_THREADS
    #: a frame loop without progress this long is hung: the systemd watchdog is no longer
    #: pinged and systemd restarts the service (onboard/systemd.py, deploy/onboard.service)
    hang_s: float = 60.0
    #: frames in flight at once (onboard/runtime/loop.py): acquisition and reconstruction in
    #: frame order, the later stages of successive frames on this many threads, products
    #: written in order while the next frames compute; 1: one frame at a time. Not when
    #: serving a flight computer ([link] port): the payload service counts a capture's frames
    #: as they are written, so it processes one at a time
    workers: int = 1

    def validate(self) -> None:
        _positive("run", frames=self.frames, deadline_s=self.deadline_s,
                  health_period_s=self.health_period_s, hang_s=self.hang_s)
        if self.scene and self.replay:
            raise ConfigError("[run] scene and replay both give the frames: choose one")
        if not 0 <= self.threads <= 1024:
            raise ConfigError(f"[run] threads: expected 0-1024 (0: the libraries' defaults), got {self.threads}")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"[run] workers: expected 1-64 frames in flight, got {self.workers}")
        if not 0 <= self.disk_floor_mb < 1e9:
            raise ConfigError(f"[run] disk_floor_mb: must be >= 0, got {self.disk_floor_mb}")


@dataclass
class ImspocConfig:
    preset: typing.Literal["default", "imspoc-uv-2"] = "default"
    n_bands: int = 24
    exposure_s: float | None = None  # None: the preset's; signal and shot-noise SNR^2 scale with it

    def validate(self) -> None:
        if self.n_bands < 5:
            raise ConfigError(f"[imspoc] n_bands: expected int >= 5, got {self.n_bands}")
        _positive("imspoc", exposure_s=self.exposure_s)


@dataclass
class PushbroomConfig:
    cross_track: int = 128
    lines_per_frame: int = 64

    def validate(self) -> None:
        _positive("pushbroom", cross_track=self.cross_track, lines_per_frame=self.lines_per_frame)


@dataclass
class SceneConfig:
    seed: int = 0
    size: int = 512  # side of the simulated farmland in pixels
    split: typing.Literal["train", "eval", "test"] = "eval"
    # which library spectra the simulated farmland (and the classical stage's bundles) draw
    # from: measured ones, the project's simulated ones, or both (onboard/scene/library.py)
    spectra: typing.Literal["all", "real", "simulated"] = "all"

    @property
    def sources(self) -> tuple[str, ...]:
        return {"all": ("earthlib", "usgs1995", "prosail"), "real": ("earthlib", "usgs1995"),
                "simulated": ("prosail",)}[self.spectra]

    def validate(self) -> None:
        _positive("scene", size=self.size)


@dataclass
class CloudsConfig:
    """Clouds over the simulated ground (onboard/scene/clouds.py); off unless ``cover`` is set."""

    cover: float | None = None  # cloudy share of each frame, 0-1; None: no clouds
    cover_max: float | None = None  # if set, each frame's cover is drawn uniformly in cover-cover_max
    kind: typing.Literal["thin", "thick", "mixed"] = "mixed"
    seed: int = 0
    cloud_height_m: float = 1000.0
    gsd_m: float = 30.0
    sun_zenith_deg: float = 40.0
    sun_azimuth_deg: float = 135.0

    def validate(self) -> None:
        for key in ("cover", "cover_max"):
            v = getattr(self, key)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ConfigError(f"[clouds] {key}: must be 0-1, got {v}")
        if self.cover_max is not None and (self.cover is None or self.cover_max < self.cover):
            raise ConfigError("[clouds] cover_max: needs cover, and cover <= cover_max")
        _positive("clouds", cloud_height_m=self.cloud_height_m, gsd_m=self.gsd_m)
        if not 0.0 <= self.sun_zenith_deg < 85.0:
            raise ConfigError(f"[clouds] sun_zenith_deg: must be 0-85, got {self.sun_zenith_deg}")


@dataclass
class ScreenConfig:
    """The per-frame cloud rule (onboard/stages/screen.py): worth sending below this cloud share."""

    max_cloud_share: float = 0.7
    min_valid_share: float = 0.1
    # what a frame not worth sending still sends: its residue map (with the screening mask) and
    # events; its events only; or everything. The rest stays in the on-board archive.
    cloudy_frames: typing.Literal["all", "residue", "events"] = "residue"
    # image motion during the exposure (pixels, from the pose at it: onboard/geo/blur.py) over
    # which a frame is not worth sending either
    max_blur_px: float = 1.0

    def validate(self) -> None:
        for key in ("max_cloud_share", "min_valid_share"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"[screen] {key}: must be 0-1, got {getattr(self, key)}")
        if not self.max_blur_px > 0:
            raise ConfigError(f"[screen] max_blur_px: must be > 0, got {self.max_blur_px}")


@dataclass
class DenoiseConfig:
    """Which denoising stage runs: "learned" (the bundle's denoiser where it loads, else the
    classical stage, saying why), "classical" always, or "auto": per sensor, the one measured
    better on held-out cubes (bench/bench_denoise.py, same noisy cubes): the classical
    subspace stage for the ImSPOC (38.0 vs 37.5 dB: its 24 reconstructed bands leave the
    refiner little to add to the subspace estimate), learned for the push-broom (50.2 vs
    49.7 dB on 16 held-out cubes; on the held-out real AVIRIS cubes under every noise case
    of issue 13 it is within 0.12 dB of the classical stage, never more below)."""

    method: typing.Literal["auto", "learned", "classical"] = "auto"

    def for_sensor(self, sensor: str) -> typing.Literal["learned", "classical"]:
        if self.method != "auto":
            return self.method
        return "classical" if sensor == "imspoc" else "learned"


@dataclass
class ResidueConfig:
    """Classical unmixing: how a pixel's brightness is treated (onboard/stages/residue.py).
    "auto" picks per sensor what measured best on held-out scenes: "sum-to-one" for the
    visible/NIR ImSPOC, where brightness and the residue/soil contrast are confounded
    (noise-free residue MAE 0.036 vs 0.141 with "free"), "prior" for the 900-1700 nm
    push-broom (pipeline MAE 0.044 and tillage accuracy 89 % vs 0.058 and 78 %)."""

    brightness: typing.Literal["auto", "prior", "free", "sum-to-one"] = "auto"
    #: which residue stage runs: "learned" where the bundle has a model for the cube's band
    #: grid (else the classical stage, saying why), "classical" always. Learned is the default:
    #: on held-out fields it beats the classical stage on both sensors (bench/bench_residue.py).
    method: typing.Literal["learned", "classical"] = "learned"
    context_px: int = 5  # odd window side over which fractions are averaged (onboard/stages/classify.py)

    def for_sensor(self, sensor: str) -> typing.Literal["prior", "free", "sum-to-one"]:
        if self.brightness != "auto":
            return self.brightness
        return "sum-to-one" if sensor == "imspoc" else "prior"

    def validate(self) -> None:
        if self.context_px < 1 or self.context_px % 2 == 0:
            raise ConfigError(f"[residue] context_px: expected an odd int >= 1, got {self.context_px}")


@dataclass
class ProductsConfig:
    quicklook: bool = True
    cube: bool = True
    cube_float16: bool = True
    #: the cube product's coding (onboard/compress/cube_coding.py): "npz" (float16 or float32
    #: in a deflated npz), "ccsds123" (reflectance quantised to cube_step, CCSDS 123.0-B-2
    #: near-lossless within cube_max_error steps; 0 is lossless of the quantised values),
    #: "ccsds123-float16" (the float16 cube bit-exact, CCSDS 123 lossless)
    cube_coding: typing.Literal["npz", "ccsds123", "ccsds123-float16"] = "npz"
    cube_step: float = 1e-4
    cube_max_error: int = 4
    #: the residue product's coding: "npz" (float32 fractions and confidence), "ccsds123"
    #: (onboard/compress/residue_coding.py: fractions and confidence to 0.01, CCSDS 123)
    residue_coding: typing.Literal["npz", "ccsds123"] = "npz"
    #: also send each ImSPOC frame's raw thumbnails (CCSDS 123 lossless), for reprocessing
    raw: bool = False

    def validate(self) -> None:
        if not self.cube_step > 0 or not 0 <= self.cube_max_error < 1 << 15:
            raise ConfigError(f"[products] cube_step must be > 0 and cube_max_error 0..32767, got {self.cube_step}, {self.cube_max_error}")


@dataclass
class EngineConfig:
    """Inference engine choice, as :class:`onboard.engines.select.EngineOptions` takes it."""

    engine: typing.Literal["auto", "tensorrt", "onnxruntime-gpu", "onnxruntime-cpu", "classical"] = "auto"
    precision: typing.Literal["fp32", "fp16", "int8"] | None = None
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    device: int = 0
    trt_cache_dir: str | None = None

    def validate(self) -> None:
        for key in ("intra_op_threads", "inter_op_threads", "device"):
            if getattr(self, key) < 0:
                raise ConfigError(f"[engine] {key}: must be >= 0, got {getattr(self, key)}")


@dataclass
class LinkConfig:
    """The serial link to the flight computer (``onboard run --port``, onboard/runtime/payload.py).
    ``rate_bytes_per_s`` 0: the UART rate of ``baud`` 8N1 (11520 B/s at 115200 baud); set it
    to the slowest hop (1200 for a 9.6 kbit/s radio). ``key_file`` comes with its
    ``counter_file`` (both made by ``python -m firmware_bridge.keytool provision``); without
    them only PING is accepted and ``uplink`` must be false. ``uplink`` true: the ground
    answers by CFDP (class 2) with PDUs authenticated like telecommands; false: class 1.
    ``spool`` defaults to ``<out>/spool``. CFDP timers as in firmware_bridge/cfdp/.
    The flight computer's POSE telecommands (PROTOCOL.md section 6.1) georeference ImSPOC
    frames as the autopilot's do a drone's (``[mavlink]``'s keys, here ``pose_``-prefixed):
    interpolated across gaps of ``pose_max_gap_s``, extrapolated ``pose_max_extrapolation_s``;
    ``pose_clock_bound_s`` bounds the payload clock's offset from the flight computer's;
    the sigmas state the navigation solution's uncertainty."""

    port: str | None = None
    baud: int = 115200
    rate_bytes_per_s: float = 0.0
    key_file: str | None = None
    counter_file: str | None = None
    uplink: bool = True
    spool: str | None = None
    spool_quota_mb: float = 256.0
    telemetry_period_s: float = 5.0
    ack_timer_s: float = 10.0
    inactivity_s: float = 60.0
    # most of the link's rate (of the current pass's, else rate_bytes_per_s) that HEALTH
    # telemetry, and health products, each take: their periods lengthen on a slow link
    telemetry_share: float = 0.02
    pose_max_gap_s: float = 2.0
    pose_max_extrapolation_s: float = 0.2
    pose_clock_bound_s: float = 0.001
    pose_position_sigma_m: float = 10.0
    pose_attitude_sigma_deg: float = 0.01

    def validate(self) -> None:
        if not 0.0 < self.telemetry_share <= 1.0:
            raise ConfigError(f"[link] telemetry_share: must be in (0, 1], got {self.telemetry_share}")
        _positive("link", pose_max_gap_s=self.pose_max_gap_s)
        for key in ("pose_max_extrapolation_s", "pose_clock_bound_s", "pose_position_sigma_m",
                    "pose_attitude_sigma_deg"):
            if not 0 <= getattr(self, key) < math.inf:
                raise ConfigError(f"[link] {key}: must be >= 0 and finite, got {getattr(self, key)}")
        _positive("link", baud=self.baud, spool_quota_mb=self.spool_quota_mb,
                  telemetry_period_s=self.telemetry_period_s, ack_timer_s=self.ack_timer_s,
                  inactivity_s=self.inactivity_s)
        if self.rate_bytes_per_s < 0:
            raise ConfigError(f"[link] rate_bytes_per_s: must be >= 0, got {self.rate_bytes_per_s}")
        if (self.key_file is None) != (self.counter_file is None):
            raise ConfigError("[link] key_file and counter_file: give both or neither")


@dataclass
class DownlinkConfig:
    """The contact plan (``onboard downlink plan``, firmware_bridge/plan.py): pass windows
    ahead, each an ``[[downlink.pass]]`` table with ``start_utc`` and ``end_utc`` (TOML
    date-times or ISO 8601 strings, UTC) and ``rate_bit_s`` (the link's rate in that pass).
    Passes are sorted by start and must not overlap."""

    passes: list[Pass] = field(default_factory=list)

    def read(self, values: dict[str, Any]) -> None:
        """Set from the TOML table: its only key is ``pass``, an array of tables."""
        for key in values:
            if key != "pass":
                raise ConfigError(f"[downlink] {key}: unknown key; [downlink] accepts pass")
        try:
            self.passes = parse_passes(values.get("pass", []))
        except PlanError as exc:
            raise ConfigError(str(exc)) from exc


#: How the products' quantity is obtained (onboard/stages/reflectance.py says each).
REFLECTANCE_METHODS = ("lab", "radiance", "panel", "irradiance", "panel+irradiance", "toa", "surface-dos")


@dataclass
class ReflectanceConfig:
    """Which quantity the products hold and how (onboard/stages/reflectance.py): ``method``
    "lab" (default: lab reflectance, as the white reference gives it), "radiance", "panel",
    "irradiance", "panel+irradiance" (a drone), "toa", "surface-dos" (a satellite). Panels are
    ``[[reflectance.panel]]`` tables: ``name``, ``wavelengths_nm`` and ``reflectance`` (its
    certificate's spectrum), ``region`` = [row, col, rows, cols] in the cube (or ``size``, the
    side in pixels of a panel the stage finds in the frame), ``uncertainty`` (relative); ``panel_frames`` the frame counters that image them. The irradiance sensor:
    ``irradiance_file`` (onboard/sources/irradiance.py) or ``irradiance_port`` with its
    ``irradiance_wavelengths_nm``; a reading farther than ``max_gap_s`` from a frame is not
    applied. ``site_lat_deg``/``site_lon_deg``: where the frames carry no position."""

    method: str = "lab"
    panel_frames: list[int] = field(default_factory=list)
    panels: list[dict] = field(default_factory=list)
    irradiance_file: str | None = None
    irradiance_port: str | None = None
    irradiance_wavelengths_nm: list[float] = field(default_factory=list)
    irradiance_uncertainty: float = 0.03
    max_gap_s: float = 1.0
    site_lat_deg: float | None = None
    site_lon_deg: float | None = None
    dark_object_reflectance: float = 0.02

    _SCALARS: typing.ClassVar[dict[str, type]] = {
        "method": str, "irradiance_file": str, "irradiance_port": str, "irradiance_uncertainty": float,
        "max_gap_s": float, "site_lat_deg": float, "site_lon_deg": float, "dark_object_reflectance": float}
    _PANEL_KEYS: typing.ClassVar[tuple[str, ...]] = ("name", "wavelengths_nm", "reflectance", "region", "size",
                                                     "uncertainty")

    def read(self, values: dict[str, Any]) -> None:
        """Set from the TOML table (scalars, two lists and the ``panel`` tables), checking each."""
        for key, value in values.items():
            where = f"[reflectance] {key}"
            if key in self._SCALARS:
                setattr(self, key, check_scalar(where, value, self._SCALARS[key], ConfigError))
            elif key in ("panel_frames", "irradiance_wavelengths_nm"):
                hint = int if key == "panel_frames" else float
                if not isinstance(value, list):
                    check_scalar(where, value, hint, ConfigError)  # a non-finite number says so first
                    raise ConfigError(f"{where}: expected a list, got {value!r}")
                setattr(self, key, [check_scalar(where, v, hint, ConfigError) for v in value])
            elif key == "panel":
                self.panels = [self._panel(i, t) for i, t in enumerate(value if isinstance(value, list) else [value])]
            else:
                raise ConfigError(f"{where}: unknown key; [reflectance] accepts "
                                  f"{', '.join(sorted([*self._SCALARS, 'panel_frames', 'irradiance_wavelengths_nm', 'panel']))}")
        if self.method not in REFLECTANCE_METHODS:
            raise ConfigError(f"[reflectance] method: expected one of {REFLECTANCE_METHODS}, got {self.method!r}")
        if self.max_gap_s <= 0:
            raise ConfigError(f"[reflectance] max_gap_s: must be > 0, got {self.max_gap_s}")
        if (self.site_lat_deg is None) != (self.site_lon_deg is None):
            raise ConfigError("[reflectance] site_lat_deg and site_lon_deg: give both or neither")
        if self.irradiance_port and len(self.irradiance_wavelengths_nm) < 2:
            raise ConfigError("[reflectance] irradiance_port needs irradiance_wavelengths_nm (the sensor's bands)")

    def _panel(self, i: int, table: Any) -> dict:
        where = f"[[reflectance.panel]] {i + 1}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table, got {table!r}")
        unknown = set(table) - set(self._PANEL_KEYS)
        if unknown or not {"name", "wavelengths_nm", "reflectance"} <= set(table) \
                or ("region" in table) == ("size" in table):
            raise ConfigError(f"{where}: needs name, wavelengths_nm, reflectance and region or size (and may "
                              f"set uncertainty); got {', '.join(sorted(table))}")
        wl = [check_scalar(where + " wavelengths_nm", v, float, ConfigError) for v in table["wavelengths_nm"]]
        refl = [check_scalar(where + " reflectance", v, float, ConfigError) for v in table["reflectance"]]
        size = check_scalar(where + " size", table.get("size", 0), int, ConfigError)
        region = [check_scalar(where + " region", v, int, ConfigError) for v in table.get("region", [0, 0, 1, 1])]
        if len(wl) < 2 or len(wl) != len(refl) or any(b <= a for a, b in zip(wl, wl[1:], strict=False)):
            raise ConfigError(f"{where}: wavelengths_nm must ascend and match reflectance ({len(wl)} vs {len(refl)})")
        if not all(0 < r <= 1.5 for r in refl):
            raise ConfigError(f"{where}: reflectance must be in (0, 1.5]")
        if len(region) != 4 or min(region) < 0 or min(region[2:]) < 1:
            raise ConfigError(f"{where}: region is [row, col, rows, cols], non-negative, at least 1 x 1")
        if "size" in table and size < 2:
            raise ConfigError(f"{where}: size must be >= 2 pixels, got {size}")
        return {"name": check_scalar(where + " name", table["name"], str, ConfigError), "wavelengths_nm": wl,
                "reflectance": refl, "region": region if "region" in table else None, "size": size,
                "uncertainty": check_scalar(where + " uncertainty", table.get("uncertainty", 0.02), float, ConfigError)}


@dataclass
class MavlinkConfig:
    """The MAVLink camera (``onboard run --mavlink URL``, onboard/runtime/mavlink_camera.py):
    ``url`` as pymavlink takes it (a serial device at ``baud``, ``udpin:HOST:PORT``,
    ``udpout:HOST:PORT``); this camera's ids (by convention the autopilot's system, component
    100: MAV_COMP_ID_CAMERA); the autopilot whose pose and clock are used (anything else is
    refused); the ground station that may also command the camera. The autopilot is lost
    after ``lost_after_s`` without a HEARTBEAT. A pose is interpolated across gaps of at most
    ``max_pose_gap_s`` and extrapolated at most ``max_extrapolation_s`` past the newest
    sample (onboard/geo/pose.py); ``position_sigma_m`` and ``attitude_sigma_deg`` state the
    autopilot's pose uncertainty for each product's expected ground error."""

    url: str | None = None
    baud: int = 921600
    system_id: int = 1
    component_id: int = 100
    autopilot_system_id: int = 1
    autopilot_component_id: int = 1
    gcs_system_id: int = 255
    lost_after_s: float = 3.0
    max_pose_gap_s: float = 0.5
    max_extrapolation_s: float = 0.05
    position_sigma_m: float = 1.5
    attitude_sigma_deg: float = 0.3

    def validate(self) -> None:
        for key in ("system_id", "component_id", "autopilot_system_id", "autopilot_component_id",
                    "gcs_system_id"):
            if not 1 <= getattr(self, key) <= 255:
                raise ConfigError(f"[mavlink] {key}: expected 1-255, got {getattr(self, key)}")
        _positive("mavlink", baud=self.baud, lost_after_s=self.lost_after_s, max_pose_gap_s=self.max_pose_gap_s)
        for key in ("max_extrapolation_s", "position_sigma_m", "attitude_sigma_deg"):
            if getattr(self, key) < 0:
                raise ConfigError(f"[mavlink] {key}: must be >= 0, got {getattr(self, key)}")


@dataclass
class CameraConfig:
    """The instrument's geometry for georeferencing (onboard/geo/georef.py): full field of
    view across the product's columns and rows (degrees), the boresight (the mount's roll,
    pitch, yaw from the vehicle's body axes, degrees; 0: looking straight down, rows along
    the heading) and the flat terrain's altitude (m, the autopilot's altitude datum; unset:
    the take-off point's, the autopilot's relative altitude being the height)."""

    fov_across_deg: float = 20.0
    fov_along_deg: float = 20.0
    boresight_roll_deg: float = 0.0
    boresight_pitch_deg: float = 0.0
    boresight_yaw_deg: float = 0.0
    terrain_alt_m: float | None = None

    def validate(self) -> None:
        for key in ("fov_across_deg", "fov_along_deg"):
            if not 0 < getattr(self, key) < 170:
                raise ConfigError(f"[camera] {key}: expected 0-170 degrees, got {getattr(self, key)}")
        for key in ("boresight_roll_deg", "boresight_pitch_deg", "boresight_yaw_deg"):
            if not -180 <= getattr(self, key) <= 180:
                raise ConfigError(f"[camera] {key}: expected -180-180 degrees, got {getattr(self, key)}")


#: ``[sky] platform`` values: no sky (the lab lamp, as before), a drone, a satellite.
SKY_PLATFORMS = ("none", "drone", "satellite")


@dataclass
class SkyConfig:
    """The simulated sensors under a sky (onboard/scene/sky.py, pvlib: the ground extra)
    instead of the lab lamp: ``platform`` "drone" (120 m, swaying ``sway_deg``; panels of
    ``[[reflectance.panel]]`` with a ``region`` are laid in ``[reflectance] panel_frames``;
    an irradiance sensor on its back at ``irradiance_hz`` with ``irradiance_noise`` feeds the
    irradiance methods when no file or port is given) or "satellite" (TOA radiance at nadir).
    The site ``lat_deg``/``lon_deg``; ``start_utc`` (ISO 8601, e.g. "2026-03-20T12:00:00Z";
    empty: the run's start) sets the sun; ``steps`` [[s after start, factor], ...] and
    ``clouds`` [[start s, end s, optical depth], ...] change the light; SPECTRL2's
    ``turbidity``, ``water_cm``, ``ozone``."""

    platform: str = "none"
    lat_deg: float = 40.0
    lon_deg: float = 0.0
    start_utc: str = ""
    steps: list[list[float]] = field(default_factory=list)
    clouds: list[list[float]] = field(default_factory=list)
    turbidity: float = 0.1
    water_cm: float = 1.4
    ozone: float = 0.3
    altitude_m: float = 120.0
    sway_deg: float = 5.0
    irradiance_hz: float = 5.0
    irradiance_noise: float = 0.005

    _LISTS: typing.ClassVar[dict[str, int]] = {"steps": 2, "clouds": 3}

    def read(self, values: dict[str, Any]) -> None:
        """Set from the TOML table, checking each key (two lists of rows, the rest scalars)."""
        hints = typing.get_type_hints(type(self))
        for key, value in values.items():
            where = f"[sky] {key}"
            if key in self._LISTS:
                n = self._LISTS[key]
                if not isinstance(value, list) or not all(isinstance(r, list) and len(r) == n for r in value):
                    raise ConfigError(f"{where}: expected a list of [{', '.join(['number'] * n)}] rows, got {value!r}")
                setattr(self, key, [[check_scalar(where, v, float, ConfigError) for v in r] for r in value])
            elif key in hints and not key.startswith("_"):
                setattr(self, key, check_scalar(where, value, hints[key], ConfigError))
            else:
                raise ConfigError(f"{where}: unknown key; [sky] accepts "
                                  f"{', '.join(sorted(k for k in hints if not k.startswith('_')))}")
        self.validate()

    def validate(self) -> None:
        if self.platform not in SKY_PLATFORMS:
            raise ConfigError(f"[sky] platform: expected one of {SKY_PLATFORMS}, got {self.platform!r}")
        if not (-90 <= self.lat_deg <= 90 and -180 <= self.lon_deg <= 180):
            raise ConfigError(f"[sky] lat_deg, lon_deg: {self.lat_deg}, {self.lon_deg} is not on Earth")
        self.start_unix()
        if any(f <= 0 for _, f in self.steps) or any(not 0 <= a < b or tau < 0 for a, b, tau in self.clouds):
            raise ConfigError("[sky] steps need factors > 0; clouds [start, end, optical depth] need "
                              "0 <= start < end and depth >= 0")
        _positive("sky", altitude_m=self.altitude_m, irradiance_hz=self.irradiance_hz)
        if not 0 <= self.irradiance_noise < 0.5 or not 0 <= self.sway_deg < 45:
            raise ConfigError("[sky] irradiance_noise must be in [0, 0.5) and sway_deg in [0, 45)")

    def start_unix(self) -> float | None:
        """``start_utc`` as Unix seconds, None when empty (the run's start)."""
        if not self.start_utc:
            return None
        import datetime

        try:
            t = datetime.datetime.fromisoformat(self.start_utc.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"[sky] start_utc: {self.start_utc!r} is not an ISO 8601 time "
                              "(e.g. \"2026-03-20T12:00:00Z\")") from None
        if t.tzinfo is None:
            raise ConfigError(f"[sky] start_utc: {self.start_utc!r} has no time zone: end it with Z for UTC")
        return t.timestamp()


@dataclass
class ValueConfig:
    """The downlink's value rule (onboard/stages/value.py): ``order`` ranks the value classes
    (most valuable first), ``cubes`` selects the frames whose cube and raw frame are spooled
    ("clear", "all", "none"), ``never`` lists classes kept on board only, ``summary_grid`` is
    the summary product's cells a side."""

    rule: ValueRule = field(default_factory=ValueRule)

    def read(self, values: dict[str, Any]) -> None:
        """Set from the TOML table; unknown keys and bad values refused by name."""
        kinds = {"order": list, "never": list, "cubes": str, "summary_grid": int}
        for key, value in values.items():
            if key not in kinds:
                raise ConfigError(f"[value] {key}: unknown key; [value] accepts {', '.join(sorted(kinds))}")
            check_scalar(f"[value] {key}", value, kinds[key], ConfigError)
            if kinds[key] is list and not all(isinstance(v, str) for v in value):
                raise ConfigError(f"[value] {key}: expected a list of class names, got {value!r}")
        args: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        try:
            self.rule = ValueRule(**args)
        except ValueError as exc:
            raise ConfigError(f"[value] {exc}") from exc


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    imspoc: ImspocConfig = field(default_factory=ImspocConfig)
    pushbroom: PushbroomConfig = field(default_factory=PushbroomConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    clouds: CloudsConfig = field(default_factory=CloudsConfig)
    screen: ScreenConfig = field(default_factory=ScreenConfig)
    products: ProductsConfig = field(default_factory=ProductsConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    residue: ResidueConfig = field(default_factory=ResidueConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    downlink: DownlinkConfig = field(default_factory=DownlinkConfig)
    reflectance: ReflectanceConfig = field(default_factory=ReflectanceConfig)
    mavlink: MavlinkConfig = field(default_factory=MavlinkConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    value: ValueConfig = field(default_factory=ValueConfig)
    sky: SkyConfig = field(default_factory=SkyConfig)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "validate"):
                section.validate()

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def from_dict(data: dict[str, Any]) -> Config:
    """Build a Config from nested dicts (as TOML gives), refusing unknown or bad keys."""
    config = Config()
    sections = {f.name: f for f in dataclasses.fields(Config)}
    for name, values in data.items():
        if name not in sections:
            raise ConfigError(f"unknown section [{name}]; sections are {', '.join(sorted(sections))}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}] must be a table of keys, got {values!r}")
        section = getattr(config, name)
        if hasattr(section, "read"):  # a section of tables, not of scalar keys
            section.read(values)
            continue
        hints = typing.get_type_hints(type(section))
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(
                    f"[{name}] {key}: unknown key; [{name}] accepts {', '.join(sorted(hints))}"
                )
            setattr(section, key, _check(name, key, value, hints[key]))
    config.validate()
    return config


def override(config: Config, section: str, key: str, value: Any) -> None:
    """Set one key (e.g. from a command-line option) with the checks a file gets."""
    target = getattr(config, section, None)
    if target is None:
        raise ConfigError(f"unknown section [{section}]")
    hints = typing.get_type_hints(type(target))
    if key not in hints:
        raise ConfigError(f"[{section}] {key}: unknown key")
    setattr(target, key, _check(section, key, value, hints[key]))
    config.validate()


def load(path: str | Path | None) -> Config:
    """Defaults, overridden by the TOML file at ``path`` when one is given."""
    if path is None:
        return from_dict({})
    return from_dict(read_toml(path, ConfigError, "configuration file"))
