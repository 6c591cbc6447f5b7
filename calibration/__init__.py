"""Ground-side characterisation of ImSPOC-family instruments from monochromatic sweeps.

``acquisitions`` reads and validates sweep folders, ``initialise`` finds starting values,
``regression`` fits every interferometer at once, ``model_selection`` picks the response
model and polynomial degree, ``characterise`` runs the chain and checks the result,
``report`` writes JSON and plots, ``simulate`` writes synthetic sweeps with a known truth,
``calfile_writer`` turns a characterisation into the runtime's calibration file,
``geometry`` finds the thumbnails on a flat frame, ``fullframe`` simulates and characterises
sweeps recorded as whole detector frames (maps, layout, per-region OPD and wedge),
``monochromatic`` reconstructs each recorded line as a check of the whole chain,
``certificate`` reads a radiance standard's certificate and ``sphere`` measures the absolute
radiance gain from an integrating sphere's frames (``onboard calibrate radiance``).
"""
