"""``onboard downlink``: the downlink seen from the payload's side.

``onboard downlink plan`` prints, for the spool as it is and the passes of the mission file
(``[[downlink.pass]]``), which product goes down in which pass, the bytes each takes on the
link and for how long, and what will not go at all before the last pass ends, with why
(firmware_bridge/plan.py). It reads the spool without writing anything, so it may run beside
the payload that owns it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from firmware_bridge.cfdp.common import DownlinkConfig
from firmware_bridge.plan import Plan, PlannedProduct, plan_spool
from onboard.config import load
from onboard.errors import OnboardError


class PlanInputError(OnboardError, ValueError):
    """The time given to the planner cannot be used."""


@click.group()
def downlink() -> None:
    """The downlink: what goes down, and when."""


def _now(text: str | None) -> dt.datetime:
    if text is None:
        return dt.datetime.now(dt.timezone.utc)
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PlanInputError(f"--now: expected an ISO 8601 UTC time, got {text!r}") from exc
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def _row(p: PlannedProduct) -> str:
    return f"    {p.name:<32} {p.kind:<12} p{p.priority:02d} {p.size:>11,d} B {p.wire_bytes:>11,d} B"


def _text(result: Plan) -> str:
    """The plan for a person: one block per pass, then what does not go."""
    lines = [f"now {result.now:%Y-%m-%d %H:%M:%S}Z: {len(result.passes)} pass(es) ahead"]
    for n, pp in enumerate(result.passes):
        w = pp.window
        lines.append(f"pass {n}: {w.start_utc:%Y-%m-%d %H:%M:%S}Z - {w.end_utc:%H:%M:%S}Z at "
                     f"{w.rate_bit_s:,.0f} bit/s: {len(pp.products)} product(s), "
                     f"{pp.used_bytes:,d} of {int(pp.capacity_bytes):,d} B on the link")
        for p in pp.products:
            assert p.start_utc is not None
            lines.append(f"{_row(p)}  {p.start_utc:%H:%M:%S}Z {p.seconds:8.1f} s")
    lines.append(f"not sent before the last pass ends: {len(result.not_sent)} product(s)")
    lines += [f"{_row(p)}  {p.reason}" for p in result.not_sent]
    return "\n".join(lines)


@downlink.command("plan")
@click.option("--spool", "spool_dir", type=click.Path(path_type=Path),
              help="Spool folder (default: [link] spool, else <[run] out>/spool).")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="Mission TOML with the [[downlink.pass]] windows.")
@click.option("--now", "now_text", help="Plan from this UTC time (ISO 8601; default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object.")
def plan_command(spool_dir: Path | None, config_path: Path | None, now_text: str | None,
                 as_json: bool) -> None:
    """Which queued product goes in which pass ahead, and what will not go at all."""
    config = load(config_path)
    root = spool_dir or Path(config.link.spool or Path(config.run.out) / "spool")
    # the CFDP class the payload uses ([link] uplink) sets the PDUs of a transfer; a folder
    # that is not a spool is a SpoolError, said in one line by the command line
    result = plan_spool(root, config.downlink.passes, _now(now_text),
                        DownlinkConfig(acknowledged=config.link.uplink))
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else _text(result))
