"""``python -m firmware_bridge.cfdp SPOOL --port URL``: serve a spool over a serial link."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from pathlib import Path

from firmware_bridge.auth import CounterStoreError, KeyFileError
from firmware_bridge.cfdp.common import DownlinkConfig
from firmware_bridge.cfdp.sender import DownlinkSender, drain_estimate
from firmware_bridge.link import ByteRate
from firmware_bridge.spool import Spool

# -- a payload-side server ----------------------------------------------------------------


def serve(spool: Spool, port_url: str, config: DownlinkConfig, rate_bytes_per_s: float,
          until_empty: bool = False, key_file: Path | None = None,
          counter_file: Path | None = None) -> tuple[DownlinkSender, dict[str, int]]:
    """Deliver ``spool`` over the serial link at ``port_url`` (see ``link.Link.open``); the
    ground's PDUs are accepted only when signed with the key in ``key_file`` (PROTOCOL.md
    section 4). Returns the sender and the uplinked DATA frames by result (OK: accepted)."""
    from firmware_bridge.dispatch import CommandDispatcher
    from firmware_bridge.link import Link, PayloadEndpoint

    if config.acknowledged and key_file is None:
        raise ValueError("class 2 needs the ground's PDUs authenticated: give --key-file and "
                         "--counter-file, or --no-uplink")
    dispatcher = CommandDispatcher.from_files({}, key_file, counter_file)
    link = Link.open(port_url, rate=ByteRate(rate_bytes_per_s))
    sender = DownlinkSender(spool, link.send_data, config)
    endpoint = PayloadEndpoint(link, dispatcher, sender.on_packet)
    try:
        while True:
            endpoint.poll(0.0)
            if not sender.step():
                if until_empty:
                    break
                endpoint.poll(0.05)
    finally:
        link.close()
    return sender, {r.name: n for r, n in endpoint.dispatcher.data_results.items()}


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a downlink spool over a serial link.")
    parser.add_argument("spool", type=Path)
    parser.add_argument("--port", help="pyserial URL: /dev/ttyTHS1, a pty, socket://")
    parser.add_argument("--estimate", action="store_true",
                        help="print how long the queue takes to drain at --rate, 115200 baud "
                             "and 9.6 kbit/s, and exit")
    parser.add_argument("--quota-mb", type=float, default=512.0)
    parser.add_argument("--rate", type=float, default=11520.0, help="bytes/s (11520: 115200 8N1)")
    parser.add_argument("--no-uplink", action="store_true", help="class 1: no ACK/NAK from the ground")
    parser.add_argument("--until-empty", action="store_true", help="exit when the spool is empty")
    parser.add_argument("--ack-timer", type=float, default=10.0,
                        help="seconds before an unacknowledged EOF is sent again")
    parser.add_argument("--inactivity", type=float, default=60.0,
                        help="seconds of silence from the ground before a transfer restarts")
    parser.add_argument("--key-file", type=Path, help="the uplink key (mode 0600); needed for "
                        "class 2, whose PDUs from the ground are authenticated")
    parser.add_argument("--counter-file", type=Path,
                        help="this end's counter file, created with the key")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO)
    spool = Spool(args.spool, int(args.quota_mb * 1e6))
    if args.estimate:
        for label, rate in (("--rate", ByteRate(args.rate)), ("115200 baud", ByteRate.uart(115200)),
                            ("9.6 kbit/s", ByteRate.bits(9600))):
            e = drain_estimate(spool.entries(), rate)
            print(f"{e.products} products, {e.product_bytes} B in {e.packets} packets "
                  f"({e.packet_bytes} B): {e.seconds:.1f} s at {label} "
                  f"({rate.bytes_per_s:.0f} B/s)")
        return
    if args.port is None:
        parser.error("--port is required to serve the spool")
    config = DownlinkConfig(acknowledged=not args.no_uplink, ack_timer_s=args.ack_timer,
                            inactivity_s=args.inactivity)
    try:
        sender, uplink = serve(spool, args.port, config, args.rate, args.until_empty,
                               args.key_file, args.counter_file)
    except (ValueError, KeyFileError, CounterStoreError) as exc:
        parser.error(str(exc))
    print(sender.stats)
    print(json.dumps({"uplink_frames": uplink}))


if __name__ == "__main__":
    main()
