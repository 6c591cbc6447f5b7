"""The error root of the flight runtime and the ground tools (defined with the bridge, the
lowest layer, so that the bridge's errors share it): see :mod:`firmware_bridge.errors`."""

from firmware_bridge.errors import BridgeError, OnboardError

__all__ = ["BridgeError", "OnboardError"]
