"""Products to the ground: CFDP (``cfdp-py``) transfers carried in CCSDS Space Packets.

Nesting on the way down::

    spool file (a product) -> CFDP PDUs (Metadata, File Data, EOF; CCSDS 727.0-B, each with
    its CRC-16) -> one CCSDS Space Packet per PDU (133.0-B, 6-byte primary header, no
    secondary header, TM, APID per product kind, 14-bit sequence count per APID)
    -> one DATA frame of the serial link (``link.Link.send_data``)

and on the way up the ground's ACK, NAK and Finished PDUs travel in TC space packets with
APID ``APID_UPLINK``.

**Modes.** With an uplink the transfer is CFDP class 2 (acknowledged): the ground NAKs lost
segments, the payload retransmits them, and a product leaves the spool only when the
ground's Finished PDU says the file arrived complete with a good CRC-32. Without an uplink
it is class 1 (unacknowledged): each product is sent ``class1_repeats`` times and then
leaves the spool; the ground keeps the first good copy.

**Order.** One transfer at a time, in spool order (priority, then age); with a contact plan,
the first in that order whose transfer fits what is left of the pass
(``firmware_bridge.spool.pick``, as the planner forecasts). A more important product that
arrives during a transfer preempts it if less than ``preempt_below`` of the file has been
sent; the preempted product is sent again from scratch afterwards.

**Power cuts.** ``cfdp-py`` keeps a transfer's state in memory only. The spool therefore
keeps the product until the ground confirmed it, and after a restart the transfer starts
again from scratch under a new transaction sequence number (persisted by the spool, so it
never repeats); the ground drops the old half-received transaction when the new one starts
and drops whole duplicates by product name and SHA-256 (``ground.sink``).

**Entities.** The payload is CFDP entity ``PAYLOAD_ENTITY`` and the ground ``GROUND_ENTITY``
(2-byte entity IDs, 4-byte transaction sequence numbers).

``DownlinkSender`` runs on the payload (one transfer at a time, in spool order);
``DownlinkReceiver`` runs on the ground (one ``cfdp-py`` destination handler per
transaction, files staged in a directory until complete). Both are transport-agnostic: they
take a ``send(packet: bytes)`` callable and are fed received packets with ``on_packet``.

Run ``python -m firmware_bridge.cfdp --help`` to serve a spool over a serial port.

Modules: ``common`` (entities, APIDs, configuration, space packets), ``adapters``
(what cfdp-py needs from us: timers, faults, user), ``sender`` (payload side), ``receiver``
(ground side), ``__main__`` (serve a spool over a serial port).
"""
