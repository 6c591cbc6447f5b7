"""Where a frame looks on the ground: the vehicle's pose at exposure (``pose``), the clock of
the autopilot that gives it (``timesync``), and the frame's footprint, CRS and geotransform
(``georef``). numpy only at import; pyproj (the ``drone`` extra) inside ``georef``'s functions."""
