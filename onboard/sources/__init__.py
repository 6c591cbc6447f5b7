"""Frame sources: the simulated instruments (``simulated``), recorded frames (``replay``), a real
camera (``camera``), all behind one protocol (``base.FrameSource``)."""
