"""onboard: the flight runtime of a hyperspectral payload.

Importing this package is cheap and never imports torch, scipy or any ground-side package.
"""

__version__ = "0.1.0"
