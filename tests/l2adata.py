"""Small Level-2A products built from real metadata, for the biophysical tests and bench.

- ``sen2cor_product``: a Sen2Cor SAFE whose ``MTD_MSIL2A.xml`` is ESA's real product metadata of a baseline 05.09
  Sentinel-2B product (``s2_metadata/MTD_MSIL1C_vhgauto-turb.xml``, its L1C offsets renamed to the L2A ones:
  RADIO_ADD_OFFSET -> BOA_ADD_OFFSET, QUANTIFICATION_VALUE -> BOA_QUANTIFICATION_VALUE) or, with
  ``baseline="02.07"``, the same without the offset list; the granule's ``MTD_TL.xml`` is the real T23LLF tile
  metadata (23 x 23 sun grids, viewing grids of 13 bands x 7 detectors).
- ``maja_product``: the MUSCATE layout of ``replicas/muscate`` with the same real angle grids written into
  ``MTD_ALL.xml`` as MAJA writes them.
- ``stac_product``: what ``sentinel2:download SOURCE=stac`` writes: ``B03.tif``..., ``SCL.tif``, ``item.json``
  (Earth Search's real item, ``raster:bands`` scale 0.0001 offset -0.1) and ``granule_metadata.xml``.

The scene: ``WIDTH`` x ``HEIGHT`` pixels at 20 m (twice that at 10 m) at ``ORIGIN`` inside T23LLF. Columns go
from bare soil (left) to dense vegetation (right); :data:`PATCHES` places clouds, shadow, water, snow, a
saturated pixel, a no-data column and a too-bright patch outside the networks' domain.
"""

import copy
import json
import os
import re
import xml.etree.ElementTree as ET

import numpy as np

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
MTD_TL = os.path.join(SHARED, "fixtures", "s2_metadata", "MTD_TL_L1C_T23LLF_marujore-sensor-harmonization.xml")
MTD_MSI = os.path.join(SHARED, "fixtures", "s2_metadata", "MTD_MSIL1C_vhgauto-turb.xml")
ITEM = os.path.join(SHARED, "fixtures", "earthsearch_v1_sentinel-2-l2a_item_S2A_39QTA_20230628_0_L2A"
                            ".CONVERTED_from_python_literal.json")
NETWORKS = os.path.join(SHARED, "biophysical", "s2tbx_3_0")
TILE_ULX, TILE_ULY, EPSG = 300000.0, 8600020.0, 32723
ORIGIN = (TILE_ULX + 43000.0, TILE_ULY - 51000.0)  # between detector borders, away from the tile's corner
WIDTH, HEIGHT = 48, 36
BANDS20 = ("B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12")
BANDS10 = ("B02", "B03", "B04", "B08")
SOIL = {"B02": 0.08, "B03": 0.10, "B04": 0.13, "B05": 0.16, "B06": 0.19, "B07": 0.21, "B08": 0.22, "B8A": 0.23,
        "B11": 0.28, "B12": 0.22}
LEAF = {"B02": 0.03, "B03": 0.05, "B04": 0.035, "B05": 0.09, "B06": 0.28, "B07": 0.36, "B08": 0.40, "B8A": 0.41,
        "B11": 0.19, "B12": 0.08}
# (rows, cols) slices at 20 m -> SCL class; "bright" is class 4 but reflectance 0.6 everywhere
PATCHES = {"cloud": ((slice(2, 8), slice(30, 40)), 9), "shadow": ((slice(10, 14), slice(30, 36)), 3),
           "water": ((slice(28, 34), slice(2, 10)), 6), "snow": ((slice(20, 24), slice(40, 46)), 11),
           "cirrus": ((slice(30, 33), slice(30, 34)), 10), "saturated": ((slice(16, 17), slice(20, 21)), 1),
           "nodata": ((slice(0, HEIGHT), slice(0, 1)), 0), "bright": ((slice(4, 8), slice(12, 16)), 4)}


def reflectance(band):
    """The scene's reflectance of ``band`` at 20 m (float64, HEIGHT x WIDTH); NaN = no data."""
    mix = np.linspace(0.0, 1.0, WIDTH)[None, :] * np.ones((HEIGHT, 1))
    mix = np.clip(mix + 0.1 * np.sin(np.arange(HEIGHT))[:, None], 0, 1)
    values = SOIL[band] * (1 - mix) + LEAF[band] * mix
    (rows, cols), _ = PATCHES["bright"]
    values[rows, cols] = 0.6
    (rows, cols), _ = PATCHES["nodata"]
    values[rows, cols] = np.nan
    return values


def band_reflectance(band):
    """B08 (the 10 m networks' near infrared) is the scene's B8A."""
    return reflectance("B8A" if band == "B08" else band)


def scl():
    classes = np.full((HEIGHT, WIDTH), 4, np.uint8)
    for (rows, cols), value in PATCHES.values():
        classes[rows, cols] = value
    return classes


def _dn(values, offset, quantification=10000, nodata=0):
    dn = np.round(values * quantification - offset)
    return np.where(np.isnan(values), nodata, dn)


def _repeat(array):
    return np.repeat(np.repeat(array, 2, axis=0), 2, axis=1)


def write_tif(path, array, resolution, kind=None, nodata=None, origin=ORIGIN):
    from osgeo import gdal, osr

    gdal_type = kind or (gdal.GDT_UInt16 if array.dtype != np.int16 else gdal.GDT_Int16)
    dataset = gdal.GetDriverByName("GTiff").Create(path, array.shape[1], array.shape[0], 1, gdal_type)
    dataset.SetGeoTransform((origin[0], resolution, 0.0, origin[1], 0.0, -resolution))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    dataset.SetProjection(srs.ExportToWkt())
    band = dataset.GetRasterBand(1)
    band.WriteArray(array)
    if nodata is not None:
        band.SetNoDataValue(nodata)
    dataset = None
    return path


# ---- Sen2Cor ------------------------------------------------------------------------------------------------

def sen2cor_name(baseline):
    code = baseline.replace(".", "")
    if baseline >= "04.00":
        return f"S2B_MSIL2A_20230601T094549_N{code}_R079_T23LLF_20230601T115221.SAFE"
    return f"S2A_MSIL2A_20190425T132241_N{code}_R038_T23LLF_20190425T164208.SAFE"


def sen2cor_metadata(baseline):
    """The real product metadata turned into its L2A form (offsets kept only for baseline 04.00 and later)."""
    with open(MTD_MSI, encoding="utf-8") as handle:
        text = handle.read()
    text = text.replace("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET").replace("Radiometric_Offset_List",
                                                                      "BOA_ADD_OFFSET_VALUES_LIST")
    text = re.sub(r"<QUANTIFICATION_VALUE (unit=\"none\")>", r"<BOA_QUANTIFICATION_VALUE \1>", text)
    text = text.replace("</QUANTIFICATION_VALUE>", "</BOA_QUANTIFICATION_VALUE>")
    text = text.replace("Level-1C", "Level-2A").replace("S2MSI1C", "S2MSI2A")
    text = text.replace("<PROCESSING_BASELINE>05.09<", f"<PROCESSING_BASELINE>{baseline}<")
    if baseline < "04.00":
        text = re.sub(r"<BOA_ADD_OFFSET_VALUES_LIST>.*?</BOA_ADD_OFFSET_VALUES_LIST>", "", text, flags=re.S)
        text = text.replace("Sentinel-2B", "Sentinel-2A")
    return text


def sen2cor_product(parent, baseline="05.09", resolutions=(20, 10)):
    from osgeo import gdal

    name = sen2cor_name(baseline)
    offset = -1000 if baseline >= "04.00" else 0
    granule = os.path.join(parent, name, "GRANULE", "L2A_T23LLF_A032566_20230601T094549")
    os.makedirs(granule, exist_ok=True)
    with open(os.path.join(parent, name, "MTD_MSIL2A.xml"), "w", encoding="utf-8") as handle:
        handle.write(sen2cor_metadata(baseline))
    with open(MTD_TL, encoding="utf-8") as source, open(os.path.join(granule, "MTD_TL.xml"), "w") as target:
        target.write(source.read())
    stem = "T23LLF_20230601T094549"
    for res in resolutions:
        folder = os.path.join(granule, "IMG_DATA", f"R{res}m")
        os.makedirs(folder, exist_ok=True)
        for band in (BANDS20 if res == 20 else BANDS10):
            values = band_reflectance(band)
            values = values if res == 20 else _repeat(values)
            write_tif(os.path.join(folder, f"{stem}_{band}_{res}m.tif"), _dn(values, offset).astype(np.uint16), res,
                      gdal.GDT_UInt16)
        classes = scl() if res == 20 else _repeat(scl())
        if res == 20:
            write_tif(os.path.join(folder, f"{stem}_SCL_20m.tif"), classes, 20, gdal.GDT_Byte)
    return os.path.join(parent, name)


# ---- MAJA ---------------------------------------------------------------------------------------------------

MAJA_NAME = "SENTINEL2B_20230601-094549-024_L2A_T23LLF_C_V3-1"


def maja_product(parent):
    from osgeo import gdal
    from replicas import muscate

    root = os.path.join(parent, MAJA_NAME)
    os.makedirs(os.path.join(root, "MASKS"), exist_ok=True)
    document = ET.fromstring(muscate.metadata(MAJA_NAME, 10000).split("\n", 1)[1])
    _maja_angles(document)
    with open(os.path.join(root, f"{MAJA_NAME}_MTD_ALL.xml"), "w", encoding="utf-8") as handle:
        handle.write('<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(document, encoding="unicode"))
    for res, bands in ((10, ("B2", "B3", "B4", "B8")), (20, ("B5", "B6", "B7", "B8A", "B11", "B12"))):
        for band in bands:
            ours = band if band == "B8A" else f"B{int(band[1:]):02d}"
            values = band_reflectance(ours)
            values = values if res == 20 else _repeat(values)
            dn = _dn(values, 0, nodata=-10000).astype(np.int16)
            write_tif(os.path.join(root, f"{MAJA_NAME}_FRE_{band}.tif"), dn, res, gdal.GDT_Int16, -10000)
        group = "R1" if res == 10 else "R2"
        classes = scl() if res == 20 else _repeat(scl())
        clm = np.where(np.isin(classes, (8, 9)), 0b00000011, 0) | np.where(classes == 3, 0b00100001, 0) | \
            np.where(classes == 10, 0b10000001, 0)
        mg2 = np.where(classes == 6, 1, 0) | np.where(classes == 11, 4, 0)
        for mask, array in (("CLM", clm), ("MG2", mg2), ("EDG", classes == 0), ("SAT", classes == 1)):
            write_tif(os.path.join(root, "MASKS", f"{MAJA_NAME}_{mask}_{group}.tif"), array.astype(np.uint8), res,
                      gdal.GDT_Byte)
    return root


def _maja_angles(document):
    """The tile's real grids in MUSCATE's form, and the tile's corner in the R1/R2 geopositioning."""
    tile = ET.parse(MTD_TL).getroot()
    sun = next(e for e in tile.iter() if e.tag.endswith("Sun_Angles_Grid"))
    target = next(e for e in document.iter() if e.tag == "Sun_Angles_Grids")
    for part in ("Zenith", "Azimuth"):
        place = target.find(part)
        values = place.find("Values_List")
        values.extend(copy.deepcopy(list(sun.find(part).find("Values_List"))))
    views = next(e for e in document.iter() if e.tag == "Viewing_Incidence_Angles_Grids_List")
    by_band = {}
    for grid in (e for e in tile.iter() if e.tag.endswith("Viewing_Incidence_Angles_Grids")):
        band = by_band.get(grid.get("bandId"))
        if band is None:
            band = ET.SubElement(views, "Band_Viewing_Incidence_Angles_Grids_List", band_id=grid.get("bandId"))
            by_band[grid.get("bandId")] = band
        detector = ET.SubElement(band, "Viewing_Incidence_Angles_Grids", detector_id=grid.get("detectorId"))
        for part in ("Zenith", "Azimuth"):
            detector.append(copy.deepcopy(grid.find(part)))
    for name, value in (("ULX", TILE_ULX), ("ULY", TILE_ULY)):
        for element in document.iter(name):
            element.text = str(value)
        if next(document.iter(name), None) is None:
            ET.SubElement(document, name).text = str(value)


# ---- STAC ---------------------------------------------------------------------------------------------------

STAC_NAME = "S2B_23LLF_20230601_0_L2A"


def stac_product(parent, shift_10m=True):
    """The 10 m bands are clipped one pixel wider on the west, as a window on their own grid may be."""
    from osgeo import gdal

    root = os.path.join(parent, STAC_NAME)
    os.makedirs(root, exist_ok=True)
    with open(ITEM, encoding="utf-8") as handle:
        item = json.load(handle)
    item["id"] = STAC_NAME
    item["properties"]["platform"] = "sentinel-2b"
    item["properties"]["s2:processing_baseline"] = "05.09"
    with open(os.path.join(root, "item.json"), "w", encoding="utf-8") as handle:
        json.dump(item, handle)
    with open(MTD_TL, encoding="utf-8") as source, open(os.path.join(root, "granule_metadata.xml"), "w") as target:
        target.write(source.read())
    for band in ("B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"):
        values = band_reflectance(band)
        dn = _dn(values, -1000).astype(np.uint16)
        if band in ("B03", "B04", "B08"):
            dn = _repeat(dn)
            origin = ORIGIN
            if shift_10m:
                dn = np.concatenate([dn[:, :1], dn], axis=1)
                origin = (ORIGIN[0] - 10.0, ORIGIN[1])
            write_tif(os.path.join(root, f"{band}.tif"), dn, 10, gdal.GDT_UInt16, 0, origin)
        else:
            write_tif(os.path.join(root, f"{band}.tif"), dn, 20, gdal.GDT_UInt16, 0)
    write_tif(os.path.join(root, "SCL.tif"), scl(), 20, gdal.GDT_Byte)
    return root
