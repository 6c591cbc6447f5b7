"""Formats shared by the flight and ground sides, each defined once: the calibration file
(``calfile``), the product format (``products``), the model-bundle manifest (``bundle``) and the
in-memory data types that flow between stages (``types``)."""
