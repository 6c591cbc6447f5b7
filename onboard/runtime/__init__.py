"""The flight application: the session that wires sensor, calibration and engines
(``session``), the stage pipeline (``pipeline``), the deadline-driven frame loop (``loop``),
the flight-computer service (``payload``) and ``onboard run`` (``run``)."""
