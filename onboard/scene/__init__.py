"""Simulated farmland for the simulated instruments (numpy only; no prosail at run time).

``library``: the shipped spectral library (soils, green canopies, crop residues) and
spectral resampling; ``farmland``: parcels, tillage practices, sub-pixel mixing and
variability, tiles along a flight track, and the nominal endmembers for unmixing.
"""
