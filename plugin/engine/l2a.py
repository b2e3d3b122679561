"""Level-2A products as the biophysical processor reads them: band files, reflectance scaling, angles, masks.

Three layouts are found in a folder (directly or one folder down):
- Sen2Cor / ESA ``S2?_MSIL2A_*.SAFE``: ``IMG_DATA/R10m|R20m/*_B03_20m.jp2``..., ``SCL_20m``; reflectance =
  (DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE from ``MTD_MSIL2A.xml`` (baseline 04.00 and later carry an
  offset of -1000, older products none); angles from the granule's ``MTD_TL.xml``; no-data DN 0.
- MAJA / THEIA (MUSCATE) ``SENTINEL2?_..._L2A_T..._V*``: ``*_FRE_B3.tif``... (flat reflectance; SRE when FRE is
  absent), DN / REFLECTANCE_QUANTIFICATION_VALUE, no-data -10000; angles from ``*_MTD_ALL.xml``; masks
  ``MASKS/*_CLM_R1|R2`` (clouds, shadows), ``MG2`` (water and snow bits as the metadata numbers them),
  ``EDG`` (edge: no data), ``SAT`` (saturation).
- ``sentinel2:download`` with ``SOURCE=stac``: a folder per product with ``B03.tif``..., ``SCL.tif``,
  ``item.json`` (the STAC item: band scale and offset in ``raster:bands``, platform) and
  ``granule_metadata.xml`` (the granule metadata: angles). A folder without the item uses the baseline in its
  name (N0400 and later: offset -1000).

Bands are read on a target grid (a resolution and a window of the product's UTM grid): a band of another
resolution is averaged (finer) or repeated (coarser) by GDAL while reading, masks with nearest neighbour.
"""

import dataclasses
import json
import os
import re
import xml.etree.ElementTree as ET

import numpy as np

from . import angles, safe
from .errors import S2Error
from .files import product_stem

BAND_IDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
# quality bits (uint16), shared by every product kind
NO_DATA, SATURATED, CLOUD, CIRRUS, SHADOW, SNOW, WATER = 1, 2, 4, 8, 16, 32, 64
MASKED = NO_DATA | SATURATED | CLOUD | CIRRUS | SHADOW | SNOW | WATER
SCL_BITS = {0: NO_DATA, 1: SATURATED, 3: SHADOW, 6: WATER, 8: CLOUD, 9: CLOUD, 10: CIRRUS, 11: SNOW}
# MAJA CLM bits (0-based): 1 all clouds except the thinnest, 2-3 mono/multi-temporal clouds, 4 thinnest clouds,
# 5 shadows of clouds in the image, 6 shadows of clouds outside it, 7 high clouds (cirrus)
CLM_CLOUD, CLM_SHADOW, CLM_CIRRUS = 0b00011110, 0b01100000, 0b10000000
MG2_DEFAULT = {"Water": 1, "Snow": 3}  # 1-based bit numbers when the metadata does not list them
MAJA_NAME = re.compile(r"^SENTINEL2([A-D])_\d{8}-\d{6}-\d{3}_L2A_T(\d{2}[A-Z]{3})_[A-Z]_V\d+-\d+$")
STAC_BAND_FILE = re.compile(r"^(B\d[0-9A]|SCL)\.tif$", re.IGNORECASE)
PLATFORM = re.compile(r"S(?:ENTINEL)?-?2([A-D])", re.IGNORECASE)


@dataclasses.dataclass
class Grid:
    """A window of a product's grid: ``transform`` is GDAL's geotransform of the window's first pixel."""

    width: int
    height: int
    transform: tuple
    projection: str

    @property
    def resolution(self):
        return self.transform[1]

    def centres(self, col_off, row_off, cols, rows):
        x0, res, _, y0, _, neg = self.transform
        xs = x0 + (np.arange(col_off, col_off + cols) + 0.5) * res
        ys = y0 + (np.arange(row_off, row_off + rows) + 0.5) * neg
        return xs, ys


@dataclasses.dataclass
class Product:
    path: str
    name: str
    kind: str  # "sen2cor", "maja", "stac"
    platform: str  # "S2A"...
    bands: dict  # "B03" -> {resolution: path}
    scaling: dict  # "B03" -> (offset, quantification): reflectance = (DN + offset) / quantification
    nodata: float  # the DN of no data
    angle_file: str
    masks: dict = dataclasses.field(default_factory=dict)  # "SCL" / "CLM" / "MG2" / "EDG" / "SAT" -> {res: path}
    mg2_bits: dict = dataclasses.field(default_factory=dict)  # "Water"/"Snow" -> 1-based bit number
    notes: list = dataclasses.field(default_factory=list)

    def band_path(self, band, resolution):
        """The file of ``band`` at ``resolution``, else the nearest resolution there is (GDAL resamples)."""
        files = self.bands.get(band) or {}
        if not files:
            raise S2Error(f"{self.name}: band {band} is missing.")
        return files.get(resolution) or files[min(files, key=lambda r: abs(r - resolution))]

    def mask_path(self, mask, resolution):
        files = self.masks.get(mask) or {}
        return (files.get(resolution) or files[min(files, key=lambda r: abs(r - resolution))]) if files else None


def find(folder, pattern=None):
    """The L2A products in ``folder`` (directly or one folder down), sorted by name; zips are not read."""
    import fnmatch

    if not os.path.isdir(folder):
        raise S2Error(f"The folder {folder} does not exist.")
    found = {}
    for entry in _entries(folder):
        if pattern and not fnmatch.fnmatch(os.path.basename(entry), pattern) and \
                not fnmatch.fnmatch(product_stem(entry), pattern):
            continue
        kind = kind_of(entry)
        if kind:
            found.setdefault(product_stem(entry), entry)
    return [found[name] for name in sorted(found)]


def _entries(folder):
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            yield entry.path
            if not kind_of(entry.path):
                yield from (e.path for e in sorted(os.scandir(entry.path), key=lambda e: e.name)
                            if e.is_dir() and not e.name.startswith("."))


def kind_of(path):
    name = os.path.basename(os.path.normpath(path))
    if re.match(r"^S2[A-D]_MSIL2A_.*\.SAFE$", name, re.IGNORECASE):
        return "sen2cor"
    if MAJA_NAME.match(name) and os.path.isfile(os.path.join(path, f"{name}_MTD_ALL.xml")):
        return "maja"
    if os.path.isdir(path) and any(STAC_BAND_FILE.match(f) for f in os.listdir(path)) and \
            (os.path.isfile(os.path.join(path, "item.json")) or "L2A" in name.upper()):
        return "stac"
    return None


def open_product(path):
    """The :class:`Product` in ``path``; S2Error with one sentence when it cannot be used."""
    kind = kind_of(path)
    reader = {"sen2cor": _sen2cor, "maja": _maja, "stac": _stac}.get(kind)
    if reader is None:
        raise S2Error(f"{os.path.basename(path)} is not a Level-2A product (Sen2Cor SAFE, MAJA or STAC bands).")
    return reader(os.path.normpath(path))


# ---- Sen2Cor SAFE -------------------------------------------------------------------------------------------

def _sen2cor(path):
    info = safe.inspect(path)
    name = product_stem(path)
    if not info.product_mtd or not info.granule or not info.mtd_tl:
        raise S2Error(f"{name}: the product metadata or its granule is missing.")
    root = _xml(info.product_mtd, name)
    quantification = (angles.first_number(root, "BOA_QUANTIFICATION_VALUE")
                      or angles.first_number(root, "QUANTIFICATION_VALUE"))
    if not quantification:
        raise S2Error(f"{name}: MTD_MSIL2A.xml has no BOA_QUANTIFICATION_VALUE.")
    offsets = _band_offsets(root, "BOA_ADD_OFFSET")
    bands, masks = {}, {}
    for key, file in info.band_files.items():
        band, _, res = key.partition("_")
        if not res:
            continue
        target = masks if band == "SCL" else bands
        target.setdefault(band, {})[int(res[:-1])] = file
    scaling = {band: (offsets.get(band, 0.0), quantification) for band in bands}
    platform = _platform(_text(root, "SPACECRAFT_NAME") or name)
    return Product(path, name, "sen2cor", platform, bands, scaling, 0, info.mtd_tl, masks)


def _band_offsets(root, tag):
    """{"B03": -1000.0, ...} from ``<BOA_ADD_OFFSET band_id="2">-1000</...>`` (band_id 0..12 = B01..B12)."""
    offsets = {}
    for element in root.iter():
        if angles.local_name(element.tag) == tag and element.get("band_id", "").isdigit():
            index = int(element.get("band_id"))
            if index < len(BAND_IDS):
                offsets[BAND_IDS[index]] = float(element.text)
    return offsets


# ---- MAJA / THEIA -------------------------------------------------------------------------------------------

def _maja(path):
    name = os.path.basename(path)
    metadata = os.path.join(path, f"{name}_MTD_ALL.xml")
    root = _xml(metadata, name)
    quantification = angles.first_number(root, "REFLECTANCE_QUANTIFICATION_VALUE")
    if not quantification:
        raise S2Error(f"{name}: MTD_ALL.xml has no REFLECTANCE_QUANTIFICATION_VALUE.")
    bands = {}
    for kind in ("FRE", "SRE"):
        for file in sorted(os.listdir(path)):
            match = re.match(rf"^{re.escape(name)}_{kind}_(B\d+A?)\.tif$", file)
            if match:
                band = _band_id(match.group(1))
                bands.setdefault(band, {})
                if not bands[band]:
                    bands[band][_resolution(os.path.join(path, file))] = os.path.join(path, file)
    masks = {}
    folder = os.path.join(path, "MASKS")
    for mask in ("CLM", "MG2", "EDG", "SAT"):
        for group, res in (("R1", 10), ("R2", 20)):
            file = os.path.join(folder, f"{name}_{mask}_{group}.tif")
            if os.path.isfile(file):
                masks.setdefault(mask, {})[res] = file
    platform = f"S2{MAJA_NAME.match(name).group(1)}"
    scaling = dict.fromkeys(bands, (0.0, quantification))
    return Product(path, name, "maja", platform, bands, scaling, -10000, metadata, masks, _mg2_bits(root))


def _mg2_bits(root):
    """The MG2 bit of each geophysical mask, as MAJA's metadata numbers them (``Mask/NATURE`` + bit_number)."""
    bits = dict(MG2_DEFAULT)
    for mask in (e for e in root.iter() if angles.local_name(e.tag) == "Mask"):
        nature = next((e.text.strip() for e in mask.iter() if angles.local_name(e.tag) == "NATURE" and e.text), "")
        files = [e for e in mask.iter() if angles.local_name(e.tag) == "MASK_FILE"]
        if nature in bits and files and "MG2" in (files[0].text or "") and files[0].get("bit_number", "").isdigit():
            bits[nature] = int(files[0].get("bit_number"))
    return bits


def _band_id(band):
    """MAJA's "B3" -> "B03", "B8A" stays."""
    digits = band[1:].rstrip("A")
    return f"B{int(digits):02d}{'A' if band.endswith('A') else ''}".replace("B08A", "B8A")


# ---- STAC per-band GeoTIFFs ---------------------------------------------------------------------------------

def _stac(path):
    name = os.path.basename(path)
    item = {}
    item_path = os.path.join(path, "item.json")
    if os.path.isfile(item_path):
        try:
            with open(item_path, encoding="utf-8") as handle:
                item = json.load(handle)
        except (OSError, ValueError) as error:
            raise S2Error(f"{name}: item.json cannot be read ({error}).") from None
    angle_file = os.path.join(path, "granule_metadata.xml")
    if not os.path.isfile(angle_file):
        raise S2Error(f"{name}: granule_metadata.xml (the angles) is missing; download the product again with "
                      f"sentinel2:download, which now saves it.")
    bands, masks, scaling = {}, {}, {}
    default = _baseline_scaling(name, item)
    for file in sorted(os.listdir(path)):
        match = STAC_BAND_FILE.match(file)
        if not match:
            continue
        band = match.group(1).upper()
        full = os.path.join(path, file)
        target = masks if band == "SCL" else bands
        target.setdefault(band, {})[_resolution(full)] = full
        if band != "SCL":
            scaling[band] = _item_scaling(item, band) or default
    platform = _platform(str(item.get("properties", {}).get("platform", "")) or name)
    return Product(path, name, "stac", platform, bands, scaling, 0, angle_file, masks)


def _item_scaling(item, band):
    """(offset, quantification) from the asset's ``raster:bands`` scale and offset (Earth Search: 0.0001 and -0.1
    for baseline 04.00+, i.e. (DN - 1000) / 10000)."""
    from .sources.stac import ASSET_KEYS

    asset = (item.get("assets") or {}).get(ASSET_KEYS.get(band, band)) or (item.get("assets") or {}).get(band)
    raster = ((asset or {}).get("raster:bands") or [{}])[0]
    scale = raster.get("scale")
    if not scale:
        return None
    return float(raster.get("offset", 0.0)) / float(scale), 1.0 / float(scale)


def _baseline_scaling(name, item):
    properties = item.get("properties", {})
    baseline = properties.get("s2:processing_baseline") or safe.name_baseline(name)
    applied = properties.get("earthsearch:boa_offset_applied")
    if applied is True or (applied is None and baseline and baseline >= "04.00"):
        return -1000.0, 10000.0
    return 0.0, 10000.0


# ---- common -------------------------------------------------------------------------------------------------

def _xml(path, name):
    try:
        return ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise S2Error(f"{name}: {os.path.basename(path)} cannot be read ({error}).") from None


def _text(root, tag):
    element = next((e for e in root.iter() if angles.local_name(e.tag) == tag), None)
    return element.text.strip() if element is not None and element.text else None


def _platform(text):
    match = PLATFORM.search(text or "")
    return f"S2{match.group(1).upper()}" if match else "S2A"


def _resolution(path):
    from osgeo import gdal

    dataset = gdal.Open(path)
    if dataset is None:
        raise S2Error(f"{path} cannot be opened: {gdal.GetLastErrorMsg()}")
    return int(round(dataset.GetGeoTransform()[1]))


def product_grid(product, resolution, area_wkt=None):
    """The target :class:`Grid`: the product's grid at ``resolution`` (its reference band's), limited to the
    bounds of ``area_wkt`` (WKT or WKB, EPSG:4326) widened to whole pixels. None when the area misses the product."""
    from osgeo import gdal, ogr, osr

    # a band with a file at this very resolution sets the grid (a 10 m clip may start 10 m off the 20 m grid)
    native = [b for b in ("B04", "B05", "B03", "B8A", "B11") if resolution in product.bands.get(b, {})]
    dataset = gdal.Open(product.band_path(native[0] if native else "B04", resolution))
    x0, fres, _, y0, _, fneg = dataset.GetGeoTransform()
    scale = fres / resolution
    width, height = int(round(dataset.RasterXSize * scale)), int(round(dataset.RasterYSize * scale))
    projection = dataset.GetProjection()
    col0, row0, col1, row1 = 0, 0, width, height
    if area_wkt:
        geometry = (ogr.CreateGeometryFromWkb(area_wkt) if isinstance(area_wkt, bytes)
                    else ogr.CreateGeometryFromWkt(area_wkt))
        source = osr.SpatialReference()
        source.ImportFromEPSG(4326)
        source.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        target = osr.SpatialReference(wkt=projection)
        target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        geometry.Transform(osr.CoordinateTransformation(source, target))
        minx, maxx, miny, maxy = geometry.GetEnvelope()
        col0 = max(col0, int(np.floor((minx - x0) / resolution)))
        col1 = min(col1, int(np.ceil((maxx - x0) / resolution)))
        row0 = max(row0, int(np.floor((y0 - maxy) / resolution)))
        row1 = min(row1, int(np.ceil((y0 - miny) / resolution)))
        if col1 <= col0 or row1 <= row0:
            return None
    return Grid(col1 - col0, row1 - row0, (x0 + col0 * resolution, float(resolution), 0.0,
                                           y0 - row0 * resolution, 0.0, -float(resolution)), projection)


def read_angles(product, grid):
    """The product's :class:`~.angles.AngleGrids` (the grid's first node at the tile's corner)."""
    grids = angles.read(product.angle_file, origin=(grid.transform[0], grid.transform[3]))
    if grids.per_scene:
        product.notes.append(f"{product.name}: the metadata has no angle grids; the scene's mean angles are used")
    return grids


class Reader:
    """Reads windows of one product's files on a target grid; one per thread (GDAL datasets are not shared)."""

    def __init__(self, product, grid):
        self.product, self.grid = product, grid
        self._open = {}

    def _dataset(self, path):
        from osgeo import gdal

        if path not in self._open:
            dataset = gdal.Open(path)
            if dataset is None:
                raise S2Error(f"{path} cannot be opened: {gdal.GetLastErrorMsg()}")
            self._open[path] = dataset
        return self._open[path]

    def read(self, path, row_off, rows, fill, average=True):
        """Rows ``row_off`` .. +``rows`` of the target grid from ``path``, as float32 (``fill`` where the file has
        no pixels); finer files are averaged (GDAL skips no-data while averaging), coarser ones repeated."""
        from osgeo import gdal

        dataset = self._dataset(path)
        fx0, fres, _, fy0, _, _ = dataset.GetGeoTransform()
        tx0, tres, _, ty0, _, _ = self.grid.transform
        ratio = tres / fres
        top = ty0 - row_off * tres
        xoff, yoff = (tx0 - fx0) / fres, (fy0 - top) / fres
        out = np.full((rows, self.grid.width), fill, np.float32)
        # the part of the target window the file covers, in target pixels
        c0 = max(0, int(np.ceil(-xoff / ratio - 1e-9)))
        c1 = min(self.grid.width, int(np.floor((dataset.RasterXSize - xoff) / ratio + 1e-9)))
        r0 = max(0, int(np.ceil(-yoff / ratio - 1e-9)))
        r1 = min(rows, int(np.floor((dataset.RasterYSize - yoff) / ratio + 1e-9)))
        if c1 <= c0 or r1 <= r0:
            return out
        algorithm = gdal.GRIORA_Average if average and ratio > 1 else gdal.GRIORA_NearestNeighbour
        band = dataset.GetRasterBand(1)
        data = band.ReadAsArray(xoff + c0 * ratio, yoff + r0 * ratio, (c1 - c0) * ratio, (r1 - r0) * ratio,
                                buf_xsize=c1 - c0, buf_ysize=r1 - r0, buf_type=gdal.GDT_Float32,
                                resample_alg=algorithm)
        if data is None:
            raise S2Error(f"{path} cannot be read: {gdal.GetLastErrorMsg()}")
        out[r0:r1, c0:c1] = data
        return out

    def reflectance(self, band, row_off, rows):
        """Reflectance of ``band`` (NaN where no data)."""
        product = self.product
        dn = self.read(product.band_path(band, int(self.grid.resolution)), row_off, rows, product.nodata)
        offset, quantification = product.scaling[band]
        missing = dn == product.nodata
        dn += offset
        dn /= quantification
        dn[missing] = np.nan
        return dn

    def quality(self, row_off, rows):
        """The mask bits (uint16) of rows from the product's SCL or MAJA masks."""
        product, res = self.product, int(self.grid.resolution)
        bits = np.zeros((rows, self.grid.width), np.uint16)
        scl = product.mask_path("SCL", res)
        if scl:
            classes = self.read(scl, row_off, rows, 0, average=False).astype(np.uint8)
            for value, bit in SCL_BITS.items():
                bits[classes == value] |= bit
            return bits
        masks = {name: product.mask_path(name, res) for name in ("CLM", "MG2", "EDG", "SAT")}
        if masks["CLM"]:
            clm = self.read(masks["CLM"], row_off, rows, 0, average=False).astype(np.uint8)
            bits[(clm & CLM_CLOUD) != 0] |= CLOUD
            bits[(clm & CLM_SHADOW) != 0] |= SHADOW
            bits[(clm & CLM_CIRRUS) != 0] |= CIRRUS
        if masks["MG2"]:
            mg2 = self.read(masks["MG2"], row_off, rows, 0, average=False).astype(np.uint16)
            bits[(mg2 & (1 << (product.mg2_bits["Water"] - 1))) != 0] |= WATER
            bits[(mg2 & (1 << (product.mg2_bits["Snow"] - 1))) != 0] |= SNOW
        if masks["EDG"]:
            bits[self.read(masks["EDG"], row_off, rows, 1, average=False) != 0] |= NO_DATA
        if masks["SAT"]:
            bits[self.read(masks["SAT"], row_off, rows, 0, average=False) != 0] |= SATURATED
        return bits
