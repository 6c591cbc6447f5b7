"""Simulated farmland for the simulated instruments (numpy only; no prosail at run time)."""
