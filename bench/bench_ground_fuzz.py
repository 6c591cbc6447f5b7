"""The ground fed mutated downlink captures: it must never crash, its memory must stay
bounded, and every good product must decode even after a bad one.

A base downlink of real products (health, events, residue maps, quick-looks in the
``onboard.formats.products`` format; class 1, as a ground without uplink records it) is
mutated N times, each capture decoded by ``ground.decode.decode_capture`` (what ``onboard
ground decode`` runs) into a fresh folder. Mutations, one per capture, in turn:

* ``bits``: 1-4 bits flipped in 1-3 packets (the capture record's CRC made valid again, so
  the damage reaches the space-packet and CFDP layers);
* ``bytes``: a packet replaced by random bytes, cut short or extended with junk;
* ``order``: packets dropped, duplicated or swapped;
* ``pdu``: one transaction's Metadata re-stamped with a hostile but well-formed field
  (a 4 GiB size, a NULL or other checksum type, a size smaller than the data), or hundreds
  of extra transactions with decreasing numbers injected (CRCs valid);
* ``product``: one product replaced by a malformed one that CFDP delivers intact (header
  fields missing or of the wrong type, random bytes, a truncated or undecodable payload, a
  kind or name that disagrees with how it came).

A product is "untouched" when none of its packets was changed; every untouched product must
be decoded. A touched product may still decode (a bit flip that CRC-16 missed in a packet
the receiver then ignored, a header edit that leaves a valid product: the product header is
not covered by its SHA-256, CFDP's CRC-32 guards it on the link); those are counted. The table gives counts per mutation, crashes, untouched products lost, the decode
time per capture and the process's resident memory (peak and growth).

    python bench/bench_ground_fuzz.py [--captures 10000] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
from spacepackets.ccsds.spacepacket import PacketType
from spacepackets.cfdp import ChecksumType
from spacepackets.util import UnsignedByteField

from firmware_bridge.cfdp.common import DownlinkConfig, PacketSequencer, parse_pdu, unwrap
from firmware_bridge.cfdp.sender import DownlinkSender
from firmware_bridge.spool import Spool
from ground.capture import CaptureWriter
from ground.decode import decode_capture
from onboard import sysinfo
from onboard.formats.products import Product, ProductKind, encode_arrays, event_product

MUTATIONS = ("bits", "bytes", "order", "pdu", "product")
#: transaction numbers of the base downlink start here, so that lower ones can be injected
FIRST_TRANSACTION = 100_000


def base_products(rng: np.random.Generator, n: int) -> list[Product]:
    out = []
    for i in range(n):
        kind = (ProductKind.HEALTH, ProductKind.EVENT, ProductKind.RESIDUE, ProductKind.QUICKLOOK)[i % 4]
        if kind == ProductKind.EVENT:
            out.append(event_product(i, 1.7e9 + i, "imspoc", "frame not replayed", f"frame {i}"))
            continue
        if kind == ProductKind.RESIDUE:
            fractions = rng.dirichlet([2, 2, 1], size=(12, 10)).transpose(2, 0, 1)
            payload = encode_arrays(tillage=np.digitize(fractions[0], [0.15, 0.3]).astype(np.uint8),
                                    fractions=fractions.astype(np.float32))
            encoding = "npz"
        elif kind == ProductKind.QUICKLOOK:
            import io

            from PIL import Image
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(buf, "PNG")
            payload, encoding = buf.getvalue(), "png"
        else:
            payload, encoding = json.dumps({"frame": i, "t_c": float(rng.normal(40, 2))}).encode(), "json"
        out.append(Product(kind=kind, frame_counter=i, created_utc=1.7e9 + i, payload=payload,
                           encoding=encoding))
    return out


def class1_downlink(work: Path, items: list[tuple[str, str, bytes]]) -> list[list[bytes]]:
    """The packets of a class 1 downlink of (name, kind, bytes), one list per product, in order."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "state.json").write_text(json.dumps({"next_seq": 0,
                                                 "next_transaction": FIRST_TRANSACTION}))
    spool = Spool(work, 100_000_000)
    for name, kind, data in items:
        spool.put(name, data, 50, kind)
    down: list[bytes] = []
    sender = DownlinkSender(spool, down.append, DownlinkConfig(acknowledged=False))
    while sender.busy:
        sender.step()
    per: dict[int, list[bytes]] = {}
    for packet in down:
        per.setdefault(parse_pdu(unwrap(packet, PacketType.TM)[1]).transaction_seq_num.value,
                       []).append(packet)
    return list(per.values())


def restamp(packet: bytes, number: int | None = None, **params: object) -> bytes:
    header, data = unwrap(packet, PacketType.TM)
    pdu = parse_pdu(data)
    if number is not None:
        old = pdu.pdu_header.transaction_seq_num
        pdu.pdu_header.transaction_seq_num = UnsignedByteField(number, old.byte_len)
    for k, v in params.items():
        setattr(pdu.params, k, v)  # type: ignore[union-attr]
    return PacketSequencer(PacketType.TM).wrap(header.apid, bytes(pdu.pack()))


def header_edit(blob: bytes, edit: Callable[[dict], object]) -> bytes:
    n = int.from_bytes(blob[5:9], "big")  # magic (4), version (1), header length (4)
    h = json.loads(blob[9:9 + n])
    h = edit(h) or h
    head = json.dumps(h).encode()
    return blob[:5] + len(head).to_bytes(4, "big") + head + blob[9 + n:]


BAD_PRODUCTS: dict[str, Callable[[Product, random.Random], bytes]] = {
    "payload_bytes missing": lambda p, r: header_edit(p.to_bytes(), lambda h: h.pop("payload_bytes") and None),
    "header a list": lambda p, r: header_edit(p.to_bytes(), lambda h: [h]),
    "kind unknown": lambda p, r: header_edit(p.to_bytes(), lambda h: h.update(kind="x")),
    "kind a number": lambda p, r: header_edit(p.to_bytes(), lambda h: h.update(kind=3)),
    "sha256 missing": lambda p, r: header_edit(p.to_bytes(), lambda h: h.pop("payload_sha256") and None),
    "random bytes": lambda p, r: r.randbytes(r.randrange(0, 3000)),
    "truncated": lambda p, r: p.to_bytes()[: r.randrange(0, len(p.to_bytes()))],
    "undecodable npz": lambda p, r: Product(kind=ProductKind.RESIDUE, frame_counter=p.frame_counter,
                                            created_utc=1.0, payload=r.randbytes(200),
                                            encoding="npz").to_bytes(),
    "kind and name of another": lambda p, r: header_edit(
        p.to_bytes(), lambda h: h.update(kind="event" if h["kind"] != "event" else "health")),
    "name of another frame": lambda p, r: header_edit(
        p.to_bytes(), lambda h: h.update(frame_counter=h["frame_counter"] + 1000)),
    "bit flip": lambda p, r: bytes(b ^ (1 << r.randrange(8)) if i == r.randrange(len(p.to_bytes())) else b
                                   for i, b in enumerate(p.to_bytes())),
}


class Fuzzer:
    def __init__(self, work: Path, seed: int, n_products: int = 8) -> None:
        self.work = work
        self.products = base_products(np.random.default_rng(seed), n_products)
        self.items = [(p.name, p.kind.value, p.to_bytes()) for p in self.products]
        self.base = class1_downlink(work / "base", self.items)
        assert len(self.base) == len(self.products)
        # malformed-product downlinks: product k replaced, built once per (k, variant)
        self.bad: list[tuple[int, list[list[bytes]]]] = []
        r = random.Random(seed)
        for j, (_what, make) in enumerate(BAD_PRODUCTS.items()):
            for k in (0, n_products // 2, n_products - 2):
                name, kind, _ = self.items[k]
                items = list(self.items)
                items[k] = (name, kind, make(self.products[k], r))
                self.bad.append((k, class1_downlink(work / f"bad{j}-{k}", items)))

    def mutate(self, what: str, r: random.Random) -> tuple[list[list[bytes]], set[int]]:
        """Packets per product after the mutation, and the products it touched."""
        per = [list(p) for p in self.base]
        touched: set[int] = set()
        if what == "product":
            k, per = r.choice(self.bad)
            return [list(p) for p in per], {k}
        if what == "bits":
            for _ in range(r.randint(1, 3)):
                k = r.randrange(len(per))
                j = r.randrange(len(per[k]))
                b = bytearray(per[k][j])
                for _ in range(r.randint(1, 4)):
                    b[r.randrange(len(b))] ^= 1 << r.randrange(8)
                per[k][j] = bytes(b)
                touched.add(k)
        elif what == "bytes":
            k = r.randrange(len(per))
            j = r.randrange(len(per[k]))
            p = per[k][j]
            per[k][j] = r.choice([r.randbytes(r.randint(7, 1024)), p[: r.randint(7, len(p))],
                                  p + r.randbytes(r.randint(1, 40))])[:1024]
            touched.add(k)
        elif what == "order":
            for _ in range(r.randint(1, 3)):
                k = r.randrange(len(per))
                j = r.randrange(len(per[k]))
                op = r.choice(["drop", "dup", "swap"])
                if op == "drop":
                    del per[k][j]
                elif op == "dup":
                    per[k].insert(j, per[k][j])
                else:
                    i = r.randrange(len(per[k]))
                    per[k][i], per[k][j] = per[k][j], per[k][i]
                touched.add(k)
        else:  # pdu
            k = r.randrange(len(per))
            choice = r.randrange(5)
            if choice == 4:
                # decreasing transaction numbers below the base ones, between two products
                n = r.randint(100, 800)
                per[k] = per[k] + [restamp(self.base[k][0], FIRST_TRANSACTION - 1 - i)
                                   for i in range(n)]
                return per, set()
            params = [{"file_size": 2**32 - 1}, {"checksum_type": ChecksumType.NULL_CHECKSUM},
                      {"checksum_type": ChecksumType.MODULAR}, {"file_size": 10}][choice]
            per[k][0] = restamp(per[k][0], **params)
            touched.add(k)
        return per, touched


def run(captures: int, seed: int, work: Path) -> dict:
    fz = Fuzzer(work, seed)
    names = [p.name for p in fz.products]
    rss0 = sysinfo.rss_bytes() or 0
    stats = {m: {"captures": 0, "expected": 0, "decoded": 0, "lost": 0, "quarantined": 0,
                 "refused": 0, "bad_accepted": 0} for m in MUTATIONS}
    crashes: list[str] = []
    rss_samples = []
    t_decode = 0.0
    for i in range(captures):
        r = random.Random(seed * 1_000_003 + i)
        what = MUTATIONS[i % len(MUTATIONS)]
        per, touched = fz.mutate(what, r)
        cap = work / "c.cap"
        cap.unlink(missing_ok=True)  # a CaptureWriter appends
        w = CaptureWriter(cap)
        for packet in (p for product in per for p in product):
            w.write(0, packet)
        w.close()
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        try:
            sink, receiver, _error = decode_capture(cap, out)
        except Exception:  # noqa: BLE001 (counted and reported: the point of the benchmark)
            crashes.append(f"capture {i} ({what}): {traceback.format_exc(limit=3)}")
            continue
        t_decode += time.perf_counter() - t0
        index = out / "index.jsonl"
        decoded = {json.loads(x)["name"] for x in index.read_text().splitlines()} if index.exists() else set()
        expected = {names[k] for k in range(len(names)) if k not in touched}
        s = stats[what]
        s["captures"] += 1
        s["expected"] += len(expected)
        s["decoded"] += len(expected & decoded)
        s["lost"] += len(expected - decoded)
        s["bad_accepted"] += len({names[k] for k in touched} & decoded)
        s["quarantined"] += sink.stats.quarantined
        s["refused"] += receiver.stats.refused
        if i % 250 == 0:
            rss_samples.append(sysinfo.rss_bytes() or 0)
    rss_samples.append(sysinfo.rss_bytes() or 0)
    return {
        "captures": captures, "seed": seed, "products_per_capture": len(names),
        "crashes": len(crashes), "crash_samples": crashes[:3],
        "untouched_lost": sum(s["lost"] for s in stats.values()),
        "by_mutation": stats,
        "decode_ms_per_capture": 1000 * t_decode / max(1, captures - len(crashes)),
        "rss_start_mb": rss0 / 2**20, "rss_end_mb": rss_samples[-1] / 2**20,
        "rss_max_sampled_mb": max(rss_samples) / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--captures", type=int, default=10_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(captures: int, seed: int, json_path: Path | None) -> None:
    # in memory where there is a tmpfs: the decoder fsyncs every product it keeps, and the
    # benchmark is about what it keeps, not about the disk
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="ground-fuzz-", dir=shm) as tmp:
        res = run(captures, seed, Path(tmp))
    print(f"{'mutation':<10} {'captures':>8} {'untouched':>10} {'decoded':>8} {'lost':>5} "
          f"{'quarantined':>11} {'refused':>8} {'touched+decoded':>15}")
    for m, s in res["by_mutation"].items():
        print(f"{m:<10} {s['captures']:>8} {s['expected']:>10} {s['decoded']:>8} {s['lost']:>5} "
              f"{s['quarantined']:>11} {s['refused']:>8} {s['bad_accepted']:>15}")
    print(f"crashes {res['crashes']}, untouched products lost {res['untouched_lost']}, "
          f"{res['decode_ms_per_capture']:.1f} ms per capture, RSS {res['rss_start_mb']:.0f} -> "
          f"{res['rss_end_mb']:.0f} MB (max sampled {res['rss_max_sampled_mb']:.0f}, "
          f"peak {res['peak_rss_mb']:.0f} MB)")
    for c in res["crash_samples"]:
        print(c)
    if json_path:
        json_path.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
