"""Value delivered per pass: the value-ranked downlink against today's FIFO-by-priority spool,
on the same HIL scenario (``hil/scenarios/passes.toml``: three 25 s passes at 9.6 kbit/s in
compressed time, frames in the first pass and between passes; the real payload process, link
emulator on pseudo-terminals, flight computer and ground).

* **value**: the scenario as shipped. ``[value]`` ranks the products (every frame's summary,
  then residue maps of clear frames, cloudy ones, cubes of clear frames, quick-looks last), the
  flight computer sends the passes by SET_PASSES, the sender starts only what ends within the
  pass (``firmware_bridge.spool.pick``) and opens each pass with its forecast.
* **fifo**: what the payload did before: no summary product (``summary_grid = 0``), the old
  priorities (health and events, residue maps, quick-looks, cubes, raw: each in age order; the
  only difference is that a cloudy frame's residue map ranks just after the clear ones instead
  of among them), the passes not sent (the sender starts whatever is first, a pass's end cuts
  it, and class 2 starts it again after ``inactivity_s`` of silence).

Value is counted per delivered product by its class (``hil.report.VALUE``: summary 4, residue
map of a clear frame 3, of a cloudy frame 1, cube 2, quick-look 1, health and events 0), and
"frames known" counts the frames of which the pass brought the first summary or residue map.

    python bench/bench_passes.py [--json F]

Measured (2026-12-07, 2 shared CPU cores, ~5 minutes): value: passes 1 and 2 forecast
19 227 / 19 473 B and received exactly those (+0.0 %, the same 6 products in the same order),
value 16 / 23 / 23 per pass (62 in all), every frame's summary down by the next pass's end,
nothing lost silently. fifo: 16 658 B in pass 0 (a residue map and a health product, value
3), then nothing in passes 1 and 2: the transfer the end of pass 0 cuts (a 14 KB residue map)
is restarted after ``inactivity_s`` (20 s) without a PDU from the ground, in the outage, and
again after pass 1 ends (payload log: 5 transfers started, 2 delivered, 2 restarted for
silence): the restarts never line up with a pass, and no frame after the first reached the
ground.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import tomllib

from hil.runner import Runner
from hil.scenario import from_dict

SCENARIO = Path(__file__).parents[1] / "hil" / "scenarios" / "passes.toml"
FIFO_ORDER = ["summary", "residue_clear", "residue_cloudy", "quicklook", "cube", "raw"]


def _fifo(doc: dict[str, Any]) -> None:
    doc["payload"]["value"] = {"order": FIFO_ORDER, "summary_grid": 0}
    doc["link"]["announce_passes"] = False
    doc["criteria"] = {"max_corrupt": 0, "payload_survives": True}


def run(variant: str) -> dict[str, Any]:
    doc = tomllib.loads(SCENARIO.read_text())
    if variant == "fifo":
        _fifo(doc)
    report = Runner(from_dict(doc, f"{SCENARIO.stem}-{variant}"), progress=lambda line: click.echo(f"  {line}", err=True)).run()
    m = report["measures"]
    return {"variant": variant, "passed": report["passed"], "criteria": report["criteria"], "passes": m["passes"],
            "summaries_late": m["summaries_late"], "lost_silently": m["lost_silently"],
            "frames_written": m["frames_written"], "queued_at_end": m["queued_at_end"],
            "failed_transfers": m["failed_transfers"]}


@click.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(json_path: Path | None) -> None:
    """Value per pass, value-ranked vs FIFO-by-priority, on the passes scenario."""
    results = [run(v) for v in ("value", "fifo")]
    click.echo(f"{'variant':8s} {'pass':>4s} {'forecast B':>11s} {'received B':>11s} {'error':>7s} "
               f"{'products':>8s} {'value':>6s} {'frames known':>12s}")
    for r in results:
        for i, p in enumerate(r["passes"]):
            err = "-" if p["error"] is None else f"{100 * p['error']:+.1f}%"
            fb = "-" if p["forecast_bytes"] is None else str(p["forecast_bytes"])
            click.echo(f"{r['variant']:8s} {i:4d} {fb:>11s} {p['received_bytes']:11d} {err:>7s} "
                       f"{p['received_products']:8d} {p['value']:6d} {p['frames_known']:12d}")
        total = sum(p["value"] for p in r["passes"])
        click.echo(f"{r['variant']:8s} total value {total}, summaries late {r['summaries_late']}, "
                   f"lost silently {r['lost_silently']}, failed transfers {r['failed_transfers']}, "
                   f"criteria {'pass' if r['passed'] else 'FAIL'}")
    click.echo(json.dumps(results))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
