"""Pipeline stages of the flight runtime, in the order data flows (DESIGN.md):

``radiometric`` (RawFrame -> RawFrame), ``reconstruct`` (RawFrame -> Cube),
``denoise`` (Cube -> Cube), ``residue`` (Cube -> ResidueMap).

Each stage is a function of typed inputs (``onboard.types``) and an explicit configuration,
with no hidden state, so it can be run, tested and timed alone. numpy only.
"""
