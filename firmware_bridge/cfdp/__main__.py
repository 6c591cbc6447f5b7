"""``python -m firmware_bridge.cfdp SPOOL --port URL``: serve a spool over a serial link."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import click

from firmware_bridge.auth import CounterStoreError, KeyFileError
from firmware_bridge.cfdp.common import DownlinkConfig
from firmware_bridge.cfdp.sender import DownlinkSender, drain_estimate
from firmware_bridge.link import ByteRate
from firmware_bridge.spool import Spool, SpoolError, queued
from firmware_bridge.stopping import StopRequest, stop_on_signals

# -- a payload-side server ----------------------------------------------------------------


def serve(spool: Spool, port_url: str, config: DownlinkConfig, rate_bytes_per_s: float,
          until_empty: bool = False, key_file: Path | None = None,
          counter_file: Path | None = None,
          stop: StopRequest | None = None) -> tuple[DownlinkSender, dict[str, int]]:
    """Deliver ``spool`` over the serial link at ``port_url`` (see ``link.Link.open``); the
    ground's PDUs are accepted only when signed with the key in ``key_file`` (PROTOCOL.md
    section 4). Returns the sender and the uplinked DATA frames by result (OK: accepted).

    ``stop`` is read between steps: a class 2 transfer waiting for a ground that is gone
    (the pass ended) steps for ever, so the loop must end on the flag, not on the transfer.
    A signal also cuts short a write blocked on a full link. A transfer stopped midway leaves
    its product queued for the next pass (the spool changes only when the ground confirms
    delivery)."""
    from firmware_bridge.dispatch import CommandDispatcher
    from firmware_bridge.link import Link, PayloadEndpoint

    if config.acknowledged and key_file is None:
        raise ValueError("class 2 needs the ground's PDUs authenticated: give --key-file and "
                         "--counter-file, or --no-uplink")
    dispatcher = CommandDispatcher.from_files({}, key_file, counter_file)
    link = Link.open(port_url, rate=ByteRate(rate_bytes_per_s))
    serving = True

    def cancel_write() -> None:
        # a write blocked on a full link (a far end that stopped reading) would otherwise
        # hold the stop for the port's write timeout and then fail; never on a port being
        # closed (the handler runs on this thread, so the flag is set before close starts)
        if serving and hasattr(link.port, "cancel_write"):  # POSIX ports have it
            link.port.cancel_write()

    if stop is not None:
        stop.on_request(cancel_write)
    sender = DownlinkSender(spool, link.send_data, config)
    endpoint = PayloadEndpoint(link, dispatcher, sender.on_packet)
    try:
        while not stop:
            endpoint.poll(0.0)
            if not sender.step():
                if until_empty:
                    break
                endpoint.poll(0.05)
    finally:
        serving = False
        link.close()
    return sender, {r.name: n for r, n in endpoint.dispatcher.data_results.items()}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("spool", type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", help="pyserial URL: /dev/ttyTHS1, a pty, socket://")
@click.option("--estimate", is_flag=True,
              help="Print how long the queue takes to drain at --rate, 115200 baud and 9.6 kbit/s, "
                   "and exit (reads the spool, writes nothing).")
@click.option("--quota-mb", type=click.FloatRange(min=0, min_open=True), default=512.0, show_default=True)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=11520.0, show_default=True,
              help="bytes/s (11520: 115200 8N1)")
@click.option("--no-uplink", is_flag=True, help="Class 1: no ACK/NAK from the ground.")
@click.option("--until-empty", is_flag=True, help="Exit when the spool is empty.")
@click.option("--ack-timer", type=float, default=10.0, show_default=True,
              help="Seconds before an unacknowledged EOF is sent again.")
@click.option("--inactivity", type=float, default=60.0, show_default=True,
              help="Seconds of silence from the ground before a transfer restarts.")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="The uplink key (mode 0600); needed for class 2, whose PDUs from the ground "
                   "are authenticated.")
@click.option("--counter-file", type=click.Path(dir_okay=False, path_type=Path),
              help="This end's counter file, created with the key.")
def main(spool: Path, port: str | None, estimate: bool, quota_mb: float, rate: float,
         no_uplink: bool, until_empty: bool, ack_timer: float, inactivity: float,
         key_file: Path | None, counter_file: Path | None) -> None:
    """Serve a downlink SPOOL over a serial link (SIGINT/SIGTERM stop it between PDUs, exit
    status 130/143; an unfinished product stays queued)."""
    if estimate:
        try:
            entries = queued(spool)
        except SpoolError as exc:
            raise click.ClickException(str(exc)) from exc
        for label, r in (("--rate", ByteRate(rate)), ("115200 baud", ByteRate.uart(115200)),
                         ("9.6 kbit/s", ByteRate.bits(9600))):
            e = drain_estimate(entries, r)
            click.echo(f"{e.products} products, {e.product_bytes} B in {e.packets} packets "
                       f"({e.packet_bytes} B): {e.seconds:.1f} s at {label} "
                       f"({r.bytes_per_s:.0f} B/s)")
        return
    if port is None:
        raise click.UsageError("--port is required to serve the spool")
    logging.basicConfig(level=logging.INFO)
    config = DownlinkConfig(acknowledged=not no_uplink, ack_timer_s=ack_timer,
                            inactivity_s=inactivity)
    with stop_on_signals() as stop:
        try:
            sender, uplink = serve(Spool(spool, int(quota_mb * 1e6)), port, config, rate,
                                   until_empty, key_file, counter_file, stop)
        except (ValueError, KeyFileError, CounterStoreError, SpoolError) as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(sender.stats)
    click.echo(json.dumps({"uplink_frames": uplink}))
    if stop.reason is not None:
        click.echo(f"stopped by {stop.reason}; {len(sender.spool)} products stay queued", err=True)
        sys.exit(128 + signal.Signals[stop.reason].value)


if __name__ == "__main__":
    main()
