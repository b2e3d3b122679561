"""MAJA L2A products in the MUSCATE (THEIA) layout, small but real: the stand-in ``maja`` writes them and the
GEODES replica zips them, so both sides of ``sentinel2:maja`` see the same products.

Layout (reference/processors.md §2.4): ``<ID>/<ID>_MTD_ALL.xml``, ``<ID>_SRE_B*.tif`` and ``<ID>_FRE_B*.tif``
(int16, nodata -10000), ``<ID>_ATB_R1/R2.tif``, ``MASKS/<ID>_{CLM,MG2,SAT,EDG,IAB}_R1/R2.tif`` (bytes) and
``DATA/<ID>_PVD_ALL/`` (the private data a following NOMINAL run reads). R1 is 10 m (B2, B3, B4, B8), R2 20 m.
The metadata is MAJA's own template (``../shared/fixtures/maja``) with its placeholders filled, or a small
document with the same elements when that folder is absent. A product above MAJA's cloud limit holds only the
metadata, as MAJA writes it (">90 % cloud: no L2 images").

GDAL is needed (osgeo); this module imports it only when a product is written.
"""

import datetime as dt
import io
import os
import re
import xml.etree.ElementTree as ET
import zipfile

TEMPLATE = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "fixtures", "maja",
                                         "MAJA_SENTINEL2_MUSCATE_L2_MTD_ALL_template.xml"))
TEMPLATE_IDS = ("SENTINEL2A_20091211-165850-593_L2A_T15SVD_C_V1-0", "SENTINEL2B_20171008-105012-463_L2A_T31TCH_C_V1-0")
R1_BANDS = ("B2", "B3", "B4", "B8")
R2_BANDS = ("B5", "B6", "B7", "B8A", "B11", "B12")
MASKS = ("CLM", "MG2", "SAT", "EDG", "IAB")
NODATA = -10000
NAME = re.compile(r"^SENTINEL2([A-D])_(\d{8})-(\d{6})-(\d{3})_L2A_T(\d{2}[A-Z]{3})_([A-Z])_V(\d+)-(\d+)$")
# CLM bits (SENTINEL2_MUSCATE): 0 summary, 1 all clouds, 2 refl, 5 cloud shadows, 7 cirrus
CLOUD, SHADOW, CIRRUS = 0b00000111, 0b00100001, 0b10000001


def product_id(platform, when, tile, version="V1-0"):
    """``SENTINEL2A_20230601-103000-000_L2A_T31TCJ_C_V1-0`` for 'S2A', a datetime, '31TCJ'."""
    return f"SENTINEL2{platform[-1]}_{when:%Y%m%d-%H%M%S}-{when.microsecond // 1000:03d}_L2A_T{tile}_C_{version}"


def write_product(parent, identifier, pixels=30, cloudy=False, quantification=10000):
    """Write the product ``identifier`` into ``parent`` and return its folder."""
    root = os.path.join(parent, identifier)
    os.makedirs(os.path.join(root, "MASKS"), exist_ok=True)
    os.makedirs(os.path.join(root, "DATA", f"{identifier}_PVD_ALL"), exist_ok=True)
    with open(os.path.join(root, "DATA", f"{identifier}_PVD_ALL", "private.txt"), "w") as handle:
        handle.write("composite and cloud history for the next NOMINAL run\n")
    with open(os.path.join(root, f"{identifier}_MTD_ALL.xml"), "w", encoding="utf-8") as handle:
        handle.write(metadata(identifier, quantification))
    if not cloudy:
        _write_images(root, identifier, pixels)
    return root


def zip_product(folder):
    """The product zipped as GEODES serves THEIA products: its folder at the top of the archive."""
    buffer = io.BytesIO()
    parent = os.path.dirname(folder)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for current, _dirs, files in sorted(os.walk(folder)):
            archive.write(current, os.path.relpath(current, parent) + "/")
            for name in sorted(files):
                path = os.path.join(current, name)
                archive.write(path, os.path.relpath(path, parent))
    return buffer.getvalue()


# ---- metadata ---------------------------------------------------------------------------------------------

def metadata(identifier, quantification):
    fields = NAME.match(identifier)
    when = dt.datetime.strptime(fields.group(2) + fields.group(3), "%Y%m%d%H%M%S")
    acquired = f"{when:%Y-%m-%dT%H:%M:%S}.{fields.group(4)}Z"
    values = {"PRODUCT_ID": identifier, "IDENTIFIER": identifier.rsplit("_", 1)[0], "ACQUISITION_DATE": acquired,
              "PLATFORM": f"SENTINEL2{fields.group(1)}", "GEOGRAPHICAL_ZONE": f"T{fields.group(5)}",
              "PRODUCTION_DATE": f"{dt.datetime.utcnow():%Y-%m-%dT%H:%M:%S}.000Z",
              "REFLECTANCE_QUANTIFICATION_VALUE": str(quantification)}
    root = _template(identifier)
    for tag, value in values.items():
        element = next(root.iter(tag), None)  # the first: later ones describe the L1 sources
        if element is not None:
            element.text = value
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")


def _template(identifier):
    if not os.path.exists(TEMPLATE):
        return ET.fromstring(_MINIMAL.format(id=identifier))
    with open(TEMPLATE, encoding="utf-8") as handle:
        text = handle.read()
    for example in TEMPLATE_IDS:
        text = text.replace(example, identifier)
    text = re.sub(r"NOT_INITIALIZED\s*", "", text)  # MAJA's writer fills these in
    text = text.replace("Image_MACC_template_temporary_node_Flat_Reflectance", "Image")
    root = ET.fromstring(text.encode("utf-8"))
    for element in root.iter():  # the template wraps names over lines
        if element.text and not list(element):
            element.text = element.text.strip()
    return root


_MINIMAL = """<Muscate_Metadata_Document>
<Metadata_Identification><METADATA_FORMAT version="1.16">METADATA_MUSCATE</METADATA_FORMAT></Metadata_Identification>
<Dataset_Identification><IDENTIFIER/><GEOGRAPHICAL_ZONE type="Tile"/></Dataset_Identification>
<Product_Characteristics><PRODUCT_ID/><ACQUISITION_DATE/><PRODUCTION_DATE/><PRODUCT_LEVEL>L2A</PRODUCT_LEVEL>
<PLATFORM/></Product_Characteristics>
<Radiometric_Informations><REFLECTANCE_QUANTIFICATION_VALUE/>
<Special_Values_List><SPECIAL_VALUE name="nodata">-10000</SPECIAL_VALUE></Special_Values_List>
</Radiometric_Informations>
</Muscate_Metadata_Document>"""


# ---- images -------------------------------------------------------------------------------------------------

def _write_images(root, identifier, pixels):
    import numpy as np

    epsg = _epsg(NAME.match(identifier).group(5))
    for group, bands, size in (("R1", R1_BANDS, pixels), ("R2", R2_BANDS, max(pixels // 2, 2))):
        grid = _grid(size)
        for index, band in enumerate(bands):
            values = (300 + 150 * index + 40 * grid).astype(np.int16)
            values[:, 0] = NODATA  # an edge of no-data, as at the swath border
            for kind in ("SRE", "FRE"):
                _tif(os.path.join(root, f"{identifier}_{kind}_{band}.tif"), [values], epsg, size, group, NODATA)
        _tif(os.path.join(root, f"{identifier}_ATB_{group}.tif"), [grid.astype(np.uint8)] * 2, epsg, size, group)
        for mask in MASKS:
            layer = _cloud_mask(size) if mask == "CLM" else np.zeros((size, size), np.uint8)
            _tif(os.path.join(root, "MASKS", f"{identifier}_{mask}_{group}.tif"), [layer], epsg, size, group)


def _grid(size):
    import numpy as np

    return np.add.outer(np.arange(size), np.arange(size)) % 17


def _cloud_mask(size):
    import numpy as np

    mask = np.zeros((size, size), np.uint8)
    third = max(size // 3, 1)
    mask[:third, :third] = CLOUD
    mask[third:2 * third, :third] = SHADOW
    mask[:third, 2 * third:] = CIRRUS
    return mask


def _tif(path, arrays, epsg, size, group, nodata=None):
    from osgeo import gdal, osr

    kind = gdal.GDT_Int16 if arrays[0].dtype.kind == "i" else gdal.GDT_Byte
    dataset = gdal.GetDriverByName("GTiff").Create(path, size, size, len(arrays), kind, ["COMPRESS=DEFLATE"])
    step = 10.0 if group == "R1" else 20.0
    dataset.SetGeoTransform((600000.0, step, 0.0, 5000040.0, 0.0, -step))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    dataset.SetProjection(srs.ExportToWkt())
    for number, array in enumerate(arrays, 1):
        band = dataset.GetRasterBand(number)
        band.WriteArray(array)
        if nodata is not None:
            band.SetNoDataValue(nodata)
    dataset = None


def _epsg(tile):
    zone, band = int(tile[:2]), tile[2]
    return (32600 if band >= "N" else 32700) + zone
