"""Onboard compression of products and raw frames for the downlink (CCSDS 123.0-B-2)."""
