"""The ground segment, ``onboard ground``: receive a downlink, keep a capture of it, decode products to user formats.

``onboard ground receive --port URL -o DIR --key-file K --counter-file C`` listens on a
serial link (any pyserial URL) as the flight computer's far end, answers CFDP class 2
transfers (ACK, NAK, Finished; each signed with the uplink key and the ground's counter,
firmware_bridge/PROTOCOL.md section 4) unless ``--no-uplink``, writes every space packet to a capture file and decodes products into DIR.
``onboard ground decode CAPTURE -o DIR`` does the same from a capture, offline.
``onboard ground export PRODUCTS... -o DIR`` writes product files (or the folders holding them:
an ``onboard run --out`` folder, a receiver's output) in the same user formats.

Each file a CFDP transaction delivers has passed CFDP's CRC-32; it must then parse as a
product (``onboard.formats.products.Product.from_bytes``, which checks the payload's SHA-256) and
its kind must match its APID. A product already in DIR with the same name and SHA-256 is a
duplicate (a retransmission after a payload reboot) and is counted, not written again; a
different product under a name already used gets ``_<sha8>`` appended.

Output in DIR:

* ``raw/NAME.obp``: the product file exactly as spooled on board (``.obpr`` from receivers
  before the suffix was unified; both are read).
* residue maps: ``NAME_tillage.tif`` (uint8 palette class map, rows x cols; 254 where the
  payload was not sure, product format 2; 255 invalid and nodata; class names in GDAL's
  metadata and ``NAME_tillage.tif.aux.xml``), ``NAME_fractions.tif`` (float32, one raster of 3
  bands named residue, soil, green; NaN nodata) and, from format 2, ``NAME_guess.tif`` (the
  class the stage chose, uncertain or not) and ``NAME_confidence.tif`` (float32, 0-1), TIFF
  written by tifffile with GDAL's tags (``user_formats``); GeoTIFF tags when the product is
  georeferenced (``meta["georef"]``, onboard/geo/georef.py: a UTM EPSG code and a GDAL
  geotransform, north-up as ModelPixelScale + ModelTiepoint, rotated as ModelTransformation,
  or ground control points as ModelTiepoints; older products' top-level ``geotransform`` and
  ``epsg`` too).
* quick-looks: ``NAME.png`` (the payload as sent) and ``NAME_captioned.png`` (enlarged 4x
  over a caption: product, frame, time, bands shown, ground pixel and scale bar; ``cog``).
* cubes: ENVI ``NAME.hdr``/``NAME.img`` (float32, band-sequential; the header has
  ``wavelength`` and ``fwhm`` in nm, ``default bands``, ``data ignore value``, ``acquisition
  time``, ``sensor type``, ``map info`` (UTM, with ``rotation``) or ``geo points`` when
  georeferenced; float16 and CCSDS 123 cubes are decoded first) and ``NAME_valid.hdr/.img``
  (uint8 validity mask), written by Spectral Python; and ``NAME.tif``, a Cloud-Optimised
  GeoTIFF written by GDAL's COG driver through rasterio (``cog``), one band per wavelength.
* health and events: one JSON line per product in ``health.jsonl`` / ``events.jsonl``
  (the product header plus its payload under ``"data"``).
* other kinds: the payload with its encoding's extension (``.json``, ``.npz``, ``.png``).
* ``index.jsonl``: one line per accepted product (name, kind, sha256, files, CFDP
  transaction); ``rejected.jsonl``: transfers and files refused, with the reason;
  ``quarantine/``: every delivered file that is not a usable product, kept as received
  (its ``rejected.jsonl`` line names it). A bad product never stops decoding, and the
  payload is told a file arrived only once it is kept durably (``sink``).

Modules: ``capture`` (the capture file), ``user_formats`` (GeoTIFF, ENVI), ``export`` (what
each product kind becomes; ``ground export``), ``sink``
(verify, deduplicate, write a delivered product), ``decode`` (a capture, offline), ``cli``
(``onboard ground``).
"""
