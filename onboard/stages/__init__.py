"""Pipeline stages of the flight runtime, in the order data flows (docs/design.md):

``radiometric`` (RawFrame -> RawFrame), ``reconstruct`` (RawFrame -> Cube),
``denoise`` (Cube -> Cube, classical) or ``learned`` (Cube -> Cube and Cube -> ResidueMap
through an inference engine), ``residue`` (Cube -> ResidueMap, classical unmixing), which
``classify`` runs with the cube's spectral response and a spatial context, and ``package``
(results -> Products). ``filters``: small spatial filters they share.

Each stage is a function of typed inputs (``onboard.formats.types``) and an explicit configuration,
with no hidden state, so it can be run, tested and timed alone. numpy only.
"""
