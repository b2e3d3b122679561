"""DEM tiles for Sentinel-2 processing: which CGIAR SRTM or Copernicus DEM tiles cover an area or a list of
Sentinel-2 tiles, getting them (local files or a download), one merged GeoTIFF, and a folder Sen2Cor reads
without downloading anything.

Facts this module relies on (reference/processors.md §3):
- CGIAR-CSI SRTM 4.1: 5°×5° tiles ``srtm_XX_YY``, ``XX = int((lon+180)/5)+1`` (1..72 from 180°W),
  ``YY = int((60-lat)/5)+1`` (1..24 from 60°N), published as ``srtm_XX_YY.zip`` holding ``srtm_XX_YY.tif``;
  SRTM has no data beyond 60°N and 56°S.
- Copernicus DEM GLO-30 / GLO-90: 1°×1° tiles named after their south-west corner,
  ``Copernicus_DSM_COG_10_N45_00_E006_00_DEM`` (``_30_`` for GLO-90), on AWS as ``<name>/<name>.tif``. Ocean cells
  have no tile (sea level), and tiles have fewer columns beyond 50° of latitude.
- Sen2Cor 2.8 asks for the SRTM tiles between the lon/lat of the tile's lower-left and upper-right corners only,
  as flat ``srtm_XX_YY.tif`` files in ``DEM_Directory``, and downloads those it lacks; 2.9 merges several tiles
  wrongly, and the community fix puts one mosaic under every name Sen2Cor asks for.
- Sen2Cor 2.12 reads previously downloaded Copernicus DEM with ``DEM_Reference`` ``CDSE-GLO-30``/``CDSE-GLO-90`` as
  flat ``Copernicus_DSM_{10|30}_..._DEM.tif`` files (what ESA's CDSE DEM downloader writes).

Pixel grids: the tiles of both products put pixel centres on whole multiples of their spacing, so a tile's raster
starts half a pixel west and north of its corner and the next tile continues it without overlap. Files say so with
different GeoTIFF tags (pixel-is-area with a shifted origin, or pixel-is-point at the corner); GDAL turns both into
the same area-based geotransform, so everything here works from geotransforms, never from the tags or names.
Sources that share spacing and alignment are copied pixel for pixel; others are resampled (nearest neighbour, so
heights stay source values) onto the finest grid among them.
"""

import contextlib
import dataclasses
import math
import os
import shutil
import tempfile
import zipfile

from . import files, gdalcache, gdalmode, grid
from . import geometry as geom
from .callbacks import check_cancelled, never_cancelled, no_progress, scaled
from .errors import Cancelled, ParameterError, S2Error, ServiceError

SRTM, COP30, COP90 = "srtm-cgiar", "copernicus-30", "copernicus-90"
DEMS = (SRTM, COP30, COP90)
SRTM_URL = "http://srtm.csi.cgiar.org/wp-content/uploads/files/srtm_5x5/TIFF/"
COP30_URL = "https://copernicus-dem-30m.s3.eu-central-1.amazonaws.com/"
COP90_URL = "https://copernicus-dem-90m.s3.eu-central-1.amazonaws.com/"
NODATA = -32768
# DEFLATE at level 1: 5 % larger than the default level 6 and half the encoding time (make bench); any GDAL,
# Sen2Cor's and MAJA's included, reads it.
CREATION_OPTIONS = ("TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "PREDICTOR=2", "ZLEVEL=1",
                    "BIGTIFF=IF_SAFER", "NUM_THREADS=ALL_CPUS")
BLOCK = 256  # rows of the output blocks above
WINDOW_COLUMNS = 32 * BLOCK  # a window of 8192 x 256 Int16 is 4 MB
OUTLINE_POINTS = 100  # per tile edge: ~1 km apart, so the lon/lat outline follows the UTM edges within metres
EPS = 1e-6  # pixels: tolerance of grid comparisons (geotransforms are decimal approximations of arc-seconds)
HARD, SYMBOLIC, COPY = "hard links", "symbolic links", "copies"
# Copernicus tiles are narrower away from the equator: (|latitude| below, columns divided by).
COPERNICUS_WIDTHS = ((50, 1.0), (60, 1.5), (70, 2.0), (80, 3.0), (85, 5.0), (90, 10.0))


@dataclasses.dataclass(frozen=True)
class DemSpec:
    """One DEM product: cell size (degrees), public base URL, nominal pixel spacing (arc-seconds, north-south),
    the latitudes it has data for, and the DEM_Reference Sen2Cor needs for a folder of its files."""

    key: str
    label: str
    size: int
    url: str
    arcsec: int
    south: float
    north: float
    reference: str
    resolution: int  # metres, for reprojection to UTM


SPECS = {
    SRTM: DemSpec(SRTM, "CGIAR-CSI SRTM", 5, SRTM_URL, 3, -56.0, 60.0, SRTM_URL, 90),
    COP30: DemSpec(COP30, "Copernicus DEM GLO-30", 1, COP30_URL, 1, -90.0, 90.0, "CDSE-GLO-30", 30),
    COP90: DemSpec(COP90, "Copernicus DEM GLO-90", 1, COP90_URL, 3, -90.0, 90.0, "CDSE-GLO-90", 90),
}


def spec(dem):
    if dem not in SPECS:
        raise ParameterError("DEM", f"'{dem}' is not a known DEM; choose one of {', '.join(DEMS)}.")
    return SPECS[dem]


# --- cells: the DEM tiles ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cell:
    """A DEM tile of ``dem`` by its south-west corner; ``lon0`` is in the area's longitude frame, which may run
    past ±180° for areas across the antimeridian (the name always uses the real longitude)."""

    dem: str
    lon0: int
    lat0: int

    @property
    def size(self):
        return SPECS[self.dem].size

    @property
    def west(self):
        return (self.lon0 + 180) % 360 - 180

    @property
    def name(self):
        if self.dem == SRTM:
            return f"srtm_{(self.west + 180) // 5 + 1:02d}_{(60 - self.lat0 - 5) // 5 + 1:02d}"
        return f"Copernicus_DSM_COG_{_copernicus_code(self.dem)}_{_corner(self.lat0, self.west)}_DEM"

    @property
    def sen2cor_file(self):
        """The file name Sen2Cor looks for in DEM_Directory."""
        if self.dem == SRTM:
            return self.name + ".tif"
        return f"Copernicus_DSM_{_copernicus_code(self.dem)}_{_corner(self.lat0, self.west)}_DEM.tif"

    @property
    def remote_path(self):
        """Where the tile is under the DEM's base URL (the public layout)."""
        if self.dem == SRTM:
            return self.name + ".zip"
        return f"{self.name}/{self.name}.tif"

    @property
    def bounds(self):
        return self.lon0, self.lat0, self.lon0 + self.size, self.lat0 + self.size

    def box(self):
        west, south, east, north = self.bounds
        return geom.polygon([(west, south), (east, south), (east, north), (west, north)])

    def nominal_resolution(self):
        """(x, y) pixel spacing in degrees of the published tile."""
        y = SPECS[self.dem].arcsec / 3600.0
        if self.dem == SRTM:
            return y, y
        nearest = min(abs(self.lat0), abs(self.lat0 + 1))
        return y * next(factor for limit, factor in COPERNICUS_WIDTHS if nearest < limit), y


def _copernicus_code(dem):
    return "10" if dem == COP30 else "30"  # the names give the spacing in tenths of arc-seconds: 1″ and 3″


def _corner(lat, lon):
    return f"{'N' if lat >= 0 else 'S'}{abs(lat):02d}_00_{'E' if lon >= 0 else 'W'}{abs(lon):03d}_00"


# --- the area ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Area:
    """The area DEM tiles are needed for, in lon/lat with continuous longitudes (parts moved by 360° next to
    each other): ``parts`` as given (their dimension matters: a polygon must overlap a cell, a point only meet
    it), ``geometry`` their union."""

    parts: list
    geometry: object

    def envelope(self):
        return self.geometry.GetEnvelope()  # lon_min, lon_max, lat_min, lat_max


def study_area(aoi=None, tiles=()):
    """The :class:`Area` of an AOI (OGR geometry, WKT or WKB in EPSG:4326) and of Sentinel-2 tiles (their
    densified outlines, which follow UTM edges that are not meridians)."""
    parts = []
    if aoi is not None:
        whole = grid._as_geometry(aoi)  # kept in a name: OGR parts are references into it
        parts.extend(p.Clone() for p in geom.parts(whole) if not p.IsEmpty())
    for tile in tiles:
        lons, lats = grid.tile_outline(tile, OUTLINE_POINTS)
        parts.append(geom.polygon(zip(lons.tolist(), lats.tolist())))
    if not parts:
        raise ParameterError("AOI", "no area was given; give an AOI layer or Sentinel-2 tile ids in TILES.")
    parts = _one_frame(parts)
    union = parts[0]
    for part in parts[1:]:
        union = union.Union(part)
    lon_min, lon_max, _, _ = union.GetEnvelope()
    if lon_max - lon_min >= 360.0:
        raise ParameterError("AOI", "the area goes all around the globe; merge DEM tiles for smaller areas.")
    return Area(parts, union)


def _one_frame(parts):
    """Move parts by multiples of 360° next to the first one, so areas across 180° are one piece."""
    reference = _centre_lon(parts[0])
    return [geom.shifted(p, 360.0 * round((reference - _centre_lon(p)) / 360.0)) for p in parts]


def _centre_lon(geometry):
    lon_min, lon_max, _, _ = geometry.GetEnvelope()
    return (lon_min + lon_max) / 2.0


def cells_for_area(dem, area):
    """The DEM tiles whose cell the area overlaps (polygons: with positive area), north to south, west to east.
    Cells beyond the DEM's naming grid (SRTM: 60°N to 60°S) are left out: see :func:`coverage_notes`."""
    size = spec(dem).size
    lon_min, lon_max, lat_min, lat_max = area.envelope()
    south, north = (-60, 60) if dem == SRTM else (-90, 90)
    cells = []
    for lat0 in range(max(_floor(lat_min, size), south), min(_ceil(lat_max, size), north), size):
        for lon0 in range(_floor(lon_min, size), _ceil(lon_max, size), size):
            cell = Cell(dem, lon0, lat0)
            if any(_overlaps(part, cell.box()) for part in area.parts):
                cells.append(cell)
    if len({c.name for c in cells}) < len(cells):  # the same tile on both ends of a frame wider than 360°
        raise ParameterError("AOI", "the area goes all around the globe; merge DEM tiles for smaller areas.")
    return sorted(cells, key=lambda c: (-c.lat0, c.lon0))


def cells_for_tiles(dem, tiles):
    """The DEM tiles covering Sentinel-2 tiles (``grid.Tile`` or ids)."""
    return cells_for_area(dem, study_area(tiles=_tiles(tiles)))


def _floor(value, size):
    return int(math.floor(value / size)) * size


def _ceil(value, size):
    return int(math.ceil(value / size)) * size


def _overlaps(part, box):
    if not part.Intersects(box):
        return False
    if part.GetDimension() < 2:
        return True
    piece = part.Intersection(box)
    # Neighbours share an edge: their intersection is a line (asking a line for its area makes GDAL warn).
    return piece is not None and piece.GetDimension() == 2 and piece.GetArea() > 1e-12


def _tiles(tiles):
    """Sentinel-2 tiles from ``grid.Tile`` objects, ids, or a comma-separated string of ids."""
    if isinstance(tiles, str):
        return grid.parse_tile_list(tiles)
    tiles = list(tiles or ())
    if tiles and isinstance(tiles[0], str):
        return grid.parse_tile_list(",".join(tiles))
    return tiles


def coverage_notes(dem, area):
    """Sentences about parts of the area the DEM has no data for; ParameterError when it has none at all."""
    product = spec(dem)
    _, _, lat_min, lat_max = area.envelope()
    if lat_min >= product.north or lat_max <= product.south:
        raise ParameterError("DEM", (
            f"{product.label} has no data beyond 60°N and 56°S, and the area lies between {lat_min:.2f}° and "
            f"{lat_max:.2f}° latitude; choose copernicus-30 or copernicus-90, which cover the whole globe."))
    if lat_max > product.north or lat_min < product.south:
        return [f"Part of the area ({lat_min:.2f}° to {lat_max:.2f}° latitude) lies beyond 60°N or 56°S, where "
                f"{product.label} has no data: it is nodata in OUTPUT, and Sen2Cor 2.8 uses a flat surface "
                f"for a tile that reaches beyond 60°N; copernicus-30 and copernicus-90 cover it."]
    return []


def sen2cor_srtm_names(tile):
    """The ``srtm_XX_YY`` names Sen2Cor 2.8's own lookup asks for a tile: the cells between the lon/lat of the
    tile's lower-left and upper-right corners (§3.2), wrapping across 180°, without names beyond 60°N/S."""
    xmin, ymin, xmax, ymax = grid.tile_rectangle(tile)
    (ll_lon, ur_lon), (ll_lat, ur_lat) = grid.to_lonlat(tile.zone, [xmin, xmax], [ymin, ymax])
    first, last = (int((_wrap(lon) + 180) // 5) + 1 for lon in (ll_lon, ur_lon))
    columns = range(first, last + 1) if first <= last else [*range(first, 73), *range(1, last + 1)]
    rows = [int((60 - lat) // 5) + 1 for lat in (ur_lat, ll_lat)]
    return sorted(f"srtm_{x:02d}_{y:02d}" for x in columns for y in range(rows[0], rows[1] + 1) if 1 <= y <= 24)


def _wrap(lon):
    return (float(lon) + 180.0) % 360.0 - 180.0


# --- rasters: local files and downloaded tiles --------------------------------------------------------------


@dataclasses.dataclass
class Raster:
    """A DEM file placed in the area's longitude frame: ``transform`` is its GDAL geotransform moved by
    ``shift`` degrees of longitude; ``cell`` is the DEM tile the file is exactly, when it is one."""

    path: str
    transform: tuple
    width: int
    height: int
    srs: object
    nodata: float = None
    shift: float = 0.0
    cell: Cell = None

    @property
    def resolution(self):
        return self.transform[1], -self.transform[5]

    @property
    def bounds(self):
        x0, dx, _, y0, _, dy = self.transform
        return x0, y0 + dy * self.height, x0 + dx * self.width, y0

    def footprint(self, pad=0.0):
        west, south, east, north = self.bounds
        west, south, east, north = west - pad, south - pad, east + pad, north + pad
        return geom.polygon([(west, south), (east, south), (east, north), (west, north)])

    def moved(self, shift):
        x0, dx, rx, y0, ry, dy = self.transform
        return dataclasses.replace(self, transform=(x0 + shift, dx, rx, y0, ry, dy), shift=self.shift + shift)


@contextlib.contextmanager
def _quiet_gdal():
    """GDAL errors become return values here (checked by the caller), not lines on stderr or in the QGIS log."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        yield gdal
    finally:
        gdal.PopErrorHandler()


def open_raster(path, parameter="INPUT_RASTERS"):
    """A :class:`Raster` for a file that looks like a DEM (one band of numbers, north-up, with a CRS)."""
    with _quiet_gdal() as gdal:
        dataset = gdal.OpenEx(os.fspath(path), gdal.OF_RASTER)
    name = os.path.basename(os.fspath(path))
    if dataset is None:
        raise ParameterError(parameter, f"cannot open {path} as a raster.")
    problem = _not_a_dem(dataset)
    if problem:
        raise ParameterError(parameter, f"{name} {problem}; a DEM has one band of heights.")
    transform = dataset.GetGeoTransform(can_return_null=True)
    if transform is None or transform[2] or transform[4] or transform[5] >= 0:
        raise ParameterError(parameter, f"{name} has no north-up georeferencing.")
    srs = dataset.GetSpatialRef()
    if srs is None:
        raise ParameterError(parameter, f"{name} has no coordinate reference system.")
    return Raster(os.fspath(path), tuple(transform), dataset.RasterXSize, dataset.RasterYSize, srs.Clone(),
                  dataset.GetRasterBand(1).GetNoDataValue())


def _not_a_dem(dataset):
    from osgeo import gdal

    if dataset.RasterCount != 1:
        return f"has {dataset.RasterCount} bands"
    band = dataset.GetRasterBand(1)
    kind = gdal.GetDataTypeName(band.DataType)
    if band.GetColorTable() is not None:
        return "has a colour table (it is a classified or paletted image)"
    if kind == "Byte" or kind.startswith("C"):
        return f"holds {kind} values, which cannot be heights in metres"
    return ""


def check_crs(rasters, parameter="INPUT_RASTERS"):
    """All rasters in one geographic WGS 84 coordinate system (DEM tiles are in EPSG:4326)."""
    from osgeo import osr

    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    if any(not _same_crs(r.srs, rasters[0].srs) for r in rasters[1:]):
        listed = ", ".join(f"{os.path.basename(r.path)}: {_crs_name(r.srs)}" for r in rasters)
        raise ParameterError(parameter, f"the rasters are in different coordinate reference systems ({listed}); "
                                        "reproject them to EPSG:4326 first.")
    for raster in rasters:
        if not raster.srs.IsGeographic() or not raster.srs.IsSameGeogCS(wgs84):
            raise ParameterError(parameter, f"{os.path.basename(raster.path)} is in {_crs_name(raster.srs)}; DEM "
                                            "tiles are merged in geographic WGS 84 (EPSG:4326): reproject it first.")


def _same_crs(a, b):
    # Lon/lat files often differ only in how they name WGS 84 (with or without EPSG code, with a vertical datum).
    return bool(a.IsSame(b) or (a.IsGeographic() and b.IsGeographic() and a.IsSameGeogCS(b)))


def _crs_name(srs):
    code = srs.GetAuthorityCode(None)
    return f"{srs.GetAuthorityName(None)}:{code}" if code else (srs.GetName() or "an unnamed CRS")


def place_rasters(rasters, area, cells):
    """The rasters that overlap the area, moved by 360° where that is where they meet it (a raster is used twice
    when it meets the area on both sides of 180°), each labelled with the cell it is exactly."""
    lon_min, lon_max, lat_min, lat_max = area.envelope()
    envelope = geom.polygon([(lon_min, lat_min), (lon_max, lat_min), (lon_max, lat_max), (lon_min, lat_max)])
    placed = []
    for raster in rasters:
        for shift in (0.0, -360.0, 360.0):
            moved = raster.moved(shift)
            if _overlaps(envelope, moved.footprint()) and _overlaps(area.geometry, moved.footprint()):
                placed.append(dataclasses.replace(moved, cell=_cell_of(moved, cells)))
    return placed


def _cell_of(raster, cells):
    """The cell this raster is a tile of, laid out as published: its pixel centres are exactly those of the cell
    on its own grid (from the corner, west and north edges included)."""
    xres, yres = raster.resolution
    for cell in cells:
        expected = _snap(cell.bounds, PixelGrid(xres, yres, cell.lon0 - xres / 2, cell.lat0 + yres / 2))
        if all(abs(a - b) < 1e-3 * xres for a, b in zip(raster.bounds, expected)):
            return cell
    return None


def uncovered_cells(cells, area, rasters):
    """The cells whose part of the area the rasters do not cover (a pixel of tolerance around each raster)."""
    if not rasters:
        return list(cells)
    covered = rasters[0].footprint(max(rasters[0].resolution))
    for raster in rasters[1:]:
        covered = covered.Union(raster.footprint(max(raster.resolution)))
    missing = []
    for cell in cells:
        piece = area.geometry.Intersection(cell.box())
        if piece is not None and not piece.IsEmpty() and not covered.Contains(piece):
            missing.append(cell)
    return missing


# --- the pixel grid of the mosaic ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PixelGrid:
    """Pixel spacing (degrees, positive) and one pixel corner (x0, y0) the mosaic's pixels are aligned to."""

    xres: float
    yres: float
    x0: float
    y0: float


def grid_of(rasters, cells):
    """The finest grid among the rasters (the published grid of the cells when there are none: all sea)."""
    if not rasters:
        xres, yres = min(c.nominal_resolution()[0] for c in cells), cells[0].nominal_resolution()[1]
        return PixelGrid(xres, yres, cells[0].lon0 - xres / 2, cells[0].lat0 + yres / 2)
    fine_x = min(rasters, key=lambda r: r.resolution[0])
    fine_y = min(rasters, key=lambda r: r.resolution[1])
    return PixelGrid(fine_x.resolution[0], fine_y.resolution[1], fine_x.transform[0], fine_y.transform[3])


def on_grid(raster, pixel_grid):
    """Does the raster share the grid, so it is copied pixel for pixel?"""
    xres, yres = raster.resolution
    same_size = _close(xres, pixel_grid.xres) and _close(yres, pixel_grid.yres)
    return same_size and _aligned(raster.transform[0], pixel_grid.x0, xres) and _aligned(
        raster.transform[3], pixel_grid.y0, yres)


def _close(a, b):
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def _aligned(a, b, res):
    steps = (a - b) / res
    return abs(steps - round(steps)) < 1e-3


def _snap(bounds, pixel_grid):
    """The pixel edges around the pixels whose centres lie in ``bounds`` (west and north edges included, east and
    south excluded: the tiles' own rule, so neighbouring cells never share a pixel)."""
    west, south, east, north = bounds
    left, right = _span(west, east, pixel_grid.x0, pixel_grid.xres)
    top, bottom = _span(-north, -south, -pixel_grid.y0, pixel_grid.yres)
    return left, -bottom, right, -top


def _span(low, high, origin, res):
    first = math.ceil((low - origin) / res - 0.5 - EPS)
    after = math.ceil((high - origin) / res - 0.5 - EPS)
    return origin + first * res, origin + after * res


def mosaic_bounds(cells, pixel_grid):
    west = min(c.lon0 for c in cells)
    south = min(c.lat0 for c in cells)
    east = max(c.lon0 + c.size for c in cells)
    north = max(c.lat0 + c.size for c in cells)
    return _snap((west, south, east, north), pixel_grid)


# --- planning: every check before any download or write ------------------------------------------------------


@dataclasses.dataclass
class Plan:
    """What :func:`build` will do; made by :func:`plan`, which validates everything first."""

    dem: str
    output: str
    area: Area
    cells: list
    local: list
    downloads: list
    base_url: str
    s2_tiles: list
    sen2cor_folder: str = None
    sen2cor_names: list = dataclasses.field(default_factory=list)
    cache_folder: str = None
    reproject_to: object = None
    resolution: float = None
    notes: list = dataclasses.field(default_factory=list)


@gdalmode.return_codes()
def plan(dem, output, aoi=None, tiles=(), input_rasters=(), url=None, sen2cor_folder=None, cache_folder=None,
         reproject_to=None, resolution=None):
    """Check the request and work out the DEM tiles and where each comes from.

    ``tiles``: Sentinel-2 tiles (``grid.Tile`` or ids); ``input_rasters``: local DEM files of any names, matched
    by extent; ``url``: base URL of the tiles, or a template with ``{name}``; None: the public location, unless
    ``input_rasters`` are given (then only they are used, and missing tiles are an error). ``reproject_to``: a
    Sentinel-2 tile whose UTM rectangle OUTPUT is warped to (``resolution`` metres, the DEM's by default).
    """
    product = spec(dem)
    tiles = _tiles(tiles)
    reproject_to = _tiles([reproject_to])[0] if reproject_to else None
    if aoi is None and not tiles:
        raise ParameterError("AOI", "no area was given; give an AOI layer or Sentinel-2 tile ids in TILES.")
    _check_output(output)
    notes = []
    s2_tiles = _sen2cor_tiles(tiles, aoi, sen2cor_folder, notes)
    area = study_area(aoi, _unique(tiles + s2_tiles + ([reproject_to] if reproject_to else [])))
    notes += coverage_notes(dem, area)
    cells = cells_for_area(dem, area)
    if not cells:
        raise ParameterError("AOI", f"the area ({_describe(area)}) meets no {product.label} tile.")
    local = _local_rasters(input_rasters, area, cells, notes)
    missing = uncovered_cells(cells, area, local)
    base_url = _base_url(url, product, bool(input_rasters), missing)
    if sen2cor_folder:
        _check_folder(sen2cor_folder, "SEN2COR_FOLDER")
    names = _sen2cor_names(dem, cells, s2_tiles) if sen2cor_folder else []
    return Plan(dem, os.path.abspath(output), area, cells, local, missing, base_url, s2_tiles,
                os.path.abspath(sen2cor_folder) if sen2cor_folder else None, names,
                cache_folder or default_cache_folder(dem), reproject_to, resolution or product.resolution, notes)


def _unique(tiles):
    return list(dict.fromkeys(tiles))


def _sen2cor_tiles(tiles, aoi, sen2cor_folder, notes):
    """The Sentinel-2 tiles the Sen2Cor folder serves: TILES, or the tiles meeting the AOI (Sen2Cor processes
    whole tiles, so the DEM then covers them whole)."""
    if tiles or not sen2cor_folder:
        return list(tiles)
    found = grid.tiles_for_area(aoi).tiles
    notes.append(f"SEN2COR_FOLDER without TILES: the folder serves the {len(found)} Sentinel-2 tiles that meet the "
                 f"AOI ({', '.join(t.tile_id for t in found)}), so the DEM covers those tiles whole.")
    return list(found)


def _sen2cor_names(dem, cells, s2_tiles):
    """SRTM: every name Sen2Cor may ask for (its two-corner lookup per tile, plus the cells it misses)."""
    if dem != SRTM:
        return []
    names = {c.name for c in cells}
    for tile in s2_tiles:
        names.update(sen2cor_srtm_names(tile))
    return sorted(names)


def _local_rasters(paths, area, cells, notes):
    rasters = [open_raster(path) for path in paths or ()]
    if not rasters:
        return []
    check_crs(rasters)
    placed = place_rasters(rasters, area, cells)
    if not placed:
        raise ParameterError("INPUT_RASTERS", f"none of the {len(rasters)} rasters overlaps the area "
                                              f"({_describe(area)}).")
    used = {r.path for r in placed}
    ignored = [os.path.basename(r.path) for r in rasters if r.path not in used]
    if ignored:
        notes.append(f"INPUT_RASTERS outside the area, not used: {', '.join(ignored)}.")
    return placed


def _describe(area):
    lon_min, lon_max, lat_min, lat_max = area.envelope()
    return f"longitude {lon_min:.2f}° to {lon_max:.2f}°, latitude {lat_min:.2f}° to {lat_max:.2f}°"


def _base_url(url, product, have_rasters, missing):
    """The URL to download the missing tiles from; a sentence when they are missing and there is none."""
    url = (url or "").strip()
    if missing and have_rasters and not url:
        raise ParameterError("INPUT_RASTERS", (
            f"the rasters do not cover the area in {len(missing)} DEM tile(s): {', '.join(c.name for c in missing)}; "
            "add those tiles, or give URL to download them."))
    url = url or product.url
    if not url.lower().startswith(("http://", "https://")):
        raise ParameterError("URL", f"'{url}' is not an http(s) address of a folder of DEM tiles.")
    return url


def _check_output(output):
    if not output:
        raise ParameterError("OUTPUT", "no output file was given.")
    if not output.lower().endswith((".tif", ".tiff")):
        raise ParameterError("OUTPUT", f"{os.path.basename(output)} is not a GeoTIFF name; the merged DEM is "
                                       "written as GeoTIFF (.tif).")
    _check_folder(os.path.dirname(os.path.abspath(output)), "OUTPUT")


def _check_folder(folder, parameter):
    """The folder exists and is writable, or can be created (its nearest existing parent is writable)."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError(parameter, f"cannot write into {folder}; choose another folder.")


def default_cache_folder(dem):
    """Where downloaded tiles are kept between runs: ``SENTINEL2_DEM_CACHE``, else the user's cache folder."""
    base = os.environ.get("SENTINEL2_DEM_CACHE")
    if not base:
        root = os.environ.get("LOCALAPPDATA") if os.name == "nt" else os.environ.get("XDG_CACHE_HOME")
        base = os.path.join(root or os.path.join(os.path.expanduser("~"), ".cache"), "sentinel2_pipeline", "dem")
    return os.path.join(base, dem)


def tile_url(base_url, cell):
    """The URL of a cell's tile: ``{name}`` in the base is replaced, else the DEM's public layout is appended."""
    if "{name}" in base_url:
        return base_url.replace("{name}", cell.name)
    return base_url.rstrip("/") + "/" + cell.remote_path


def check_reachable(work, session):
    """Before any work: one HEAD request to the first tile to download; any HTTP answer will do (an ocean tile
    answers 404), only a failed connection is a ParameterError."""
    if not work.downloads:
        return
    from . import http

    url = tile_url(work.base_url, work.downloads[0])
    try:
        session.head(url, allow_redirects=True, timeout=(10, 30)).close()
    except Exception as error:  # noqa: BLE001 (requests, urllib3 and socket errors alike mean "unreachable")
        sentence = str(http.service_error(error, url=url)).rstrip(".")
        raise ParameterError("URL", f"the DEM tiles cannot be downloaded: {sentence}; give the tiles in "
                                    "INPUT_RASTERS or another URL.") from None


# --- building: downloads, the merged GeoTIFF, the Sen2Cor folder --------------------------------------------


@dataclasses.dataclass
class Result:
    output: str
    dem_tiles: list
    sea_level: list
    sen2cor_folder: str = None
    sen2cor_files: list = dataclasses.field(default_factory=list)
    links: str = ""
    dem_directory: str = None
    dem_reference: str = None
    notes: list = dataclasses.field(default_factory=list)


@gdalmode.return_codes()
def build(work, session=None, progress=None, is_cancelled=None, log=None, parallel=4, backoff=1.0):
    """Do what :func:`plan` worked out; returns a :class:`Result`. Writes every file through a temporary name."""
    progress, is_cancelled, log = progress or no_progress, is_cancelled or never_cancelled, log or (lambda _: None)
    rasters, sea = list(work.local), []
    if work.downloads:
        with contextlib.ExitStack() as stack:
            if session is None:
                from .http import new_session

                session = stack.enter_context(new_session())
            fetched, sea = download(work, session, scaled(progress, 0.0, 0.45), is_cancelled, log, parallel,
                                    backoff)
        rasters = fetched + rasters  # local files come last in the mosaic: they win where both cover
    check_cancelled(is_cancelled)
    notes = list(work.notes) + _sea_notes(sea)
    os.makedirs(os.path.dirname(work.output), exist_ok=True)
    work_folder = tempfile.mkdtemp(prefix=".mergedem-", dir=os.path.dirname(work.output))
    try:
        vrt, pixel_grid, resampled = mosaic_vrt(work, rasters, sea, work_folder)
        notes += _grid_notes(resampled, pixel_grid)
        _write_output(work, vrt, work_folder, scaled(progress, 0.45, 0.85), is_cancelled)
        result = Result(work.output, [c.name for c in work.cells], [c.name for c in sea], notes=notes)
        if work.sen2cor_folder:
            _write_sen2cor(work, result, vrt, pixel_grid, rasters, sea, scaled(progress, 0.85, 1.0), is_cancelled)
    finally:
        shutil.rmtree(work_folder, ignore_errors=True)
    progress(1.0, "")
    return result


def _sea_notes(sea):
    if not sea:
        return []
    return [f"No tile on the server for {', '.join(c.name for c in sea)} (HTTP 404): counted as sea level (0 m). "
            "Ocean cells have no tile, but a tile missing over land looks the same offline: check the area if "
            "it has land there."]


def _grid_notes(resampled, pixel_grid):
    if not resampled:
        return []
    names = ", ".join(os.path.basename(r.path) for r in resampled)
    return [f"{names} have another pixel grid than the finest one ({pixel_grid.xres * 3600:.4g}″ × "
            f"{pixel_grid.yres * 3600:.4g}″): resampled with nearest neighbour, so heights stay source values."]


# --- downloads ----------------------------------------------------------------------------------------------


def download(work, session, progress, is_cancelled, log, parallel=4, backoff=1.0):
    """Fetch the missing tiles into the cache (resumable, verified, in parallel); returns (rasters, sea cells).
    A tile the server does not have (404) is sea level; any other failure is a ServiceError."""
    from .transfer import FAILED, Transfer, download_all

    cache = work.cache_folder
    _prepare_cache(cache)
    ready, transfers = {}, {}
    for cell in work.downloads:
        path = os.path.join(cache, cell.name + ".tif")
        if os.path.exists(path):  # only complete, verified files ever get this name
            ready[cell] = path
            continue
        url = tile_url(work.base_url, cell)
        suffix = ".zip" if url.lower().split("?")[0].endswith(".zip") else ".tif"
        transfers[cell] = Transfer(url, os.path.join(cache, cell.name + suffix), name=cell.name)
    if ready:
        log(f"{len(ready)} DEM tile(s) already in {cache}.")
    report = download_all(transfers.values(), session, parallel, progress, is_cancelled, log, backoff=backoff)
    outcomes = {outcome.transfer.dest: outcome for outcome in report.outcomes}
    sea, failed = [], []
    for cell, transfer in transfers.items():
        outcome = outcomes[transfer.dest]
        if outcome.status != FAILED:
            ready[cell] = _unpack(outcome.path, cell)
        elif _absent(session, transfer.url):
            sea.append(cell)
        else:
            failed.append(outcome)
    if failed:
        raise ServiceError(f"{len(failed)} DEM tile(s) could not be downloaded "
                           f"({', '.join(o.transfer.name for o in failed)}); {failed[0].reason}")
    rasters = [dataclasses.replace(_downloaded(path, cell), cell=cell) for cell, path in ready.items()]
    return [r.moved(cell.lon0 - cell.west) for r, cell in zip(rasters, ready)], sea


def _downloaded(path, cell):
    """The raster of a fetched tile; a file GDAL cannot use is deleted (so the next run fetches it again)."""
    try:
        return open_raster(path, "URL")
    except ParameterError as error:
        files.remove(path)
        raise ServiceError(f"{cell.name}: the downloaded file is not a usable DEM ({error}); it was deleted, "
                           "run again or check the URL.") from None


def _prepare_cache(cache):
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError as error:
        raise S2Error(f"Cannot create the DEM tile cache {cache} ({error.strerror}); set SENTINEL2_DEM_CACHE to "
                      "a writable folder.") from None
    if not os.access(cache, os.W_OK | os.X_OK):
        raise S2Error(f"The DEM tile cache {cache} is not writable; set SENTINEL2_DEM_CACHE to a writable folder.")


def _absent(session, url):
    """Does the server say the tile does not exist (rather than failing)?"""
    try:
        response = session.head(url, allow_redirects=True, timeout=(10, 30))
    except Exception:  # noqa: BLE001 (a broken network is not an absent tile)
        return False
    response.close()
    return response.status_code in (404, 410)


def _unpack(path, cell):
    """The tile's GeoTIFF: a downloaded .tif as is, or the one .tif of a zip extracted next to it (then the zip
    goes: the .tif is the cache entry)."""
    if not path.lower().endswith(".zip"):
        return path
    target = os.path.join(os.path.dirname(path), cell.name + ".tif")
    try:
        with zipfile.ZipFile(path) as archive:
            member = _tif_member(archive, cell, path)
            with archive.open(member) as source, open(target + ".part", "wb") as copy:
                shutil.copyfileobj(source, copy, 1 << 20)
    except zipfile.BadZipFile:
        os.remove(path)
        raise ServiceError(f"{cell.name}: the server sent something that is not a zip archive; try again or check "
                           "the URL.") from None
    os.replace(target + ".part", target)
    os.remove(path)
    return target


def _tif_member(archive, cell, path):
    wanted = cell.name.lower() + ".tif"
    for info in archive.infolist():
        if os.path.basename(info.filename).lower() == wanted and not info.is_dir():
            return info
    raise ServiceError(f"{cell.name}: {os.path.basename(path)} holds no {cell.name}.tif.")


# --- merging ------------------------------------------------------------------------------------------------


def mosaic_vrt(work, rasters, sea, folder):
    """A VRT of every source on one grid over the cells (sea cells filled with 0 m, nodata elsewhere); returns
    (path, grid, rasters that had to be resampled)."""
    from osgeo import gdal

    pixel_grid = grid_of(rasters, work.cells)
    srs = rasters[0].srs.ExportToWkt() if rasters else _wgs84_wkt()
    sources = [_sea_tile(cell, pixel_grid, srs, folder) for cell in sea]
    sources += [_source_path(r, pixel_grid, folder, i) for i, r in enumerate(rasters)]
    xmin, ymin, xmax, ymax = mosaic_bounds(work.cells, pixel_grid)
    path = os.path.join(folder, "mosaic.vrt")
    options = gdal.BuildVRTOptions(outputBounds=(xmin, ymin, xmax, ymax), xRes=pixel_grid.xres,
                                   yRes=pixel_grid.yres, resampleAlg="nearest", VRTNodata=NODATA,
                                   srcNodata=None if _needs_masking(rasters) else "None",
                                   allowProjectionDifference=True)  # CRSs were checked: only WGS 84 lon/lat
    with _quiet_gdal():
        dataset = gdal.BuildVRT(path, sources, options=options)
        message = gdal.GetLastErrorMsg()
    if dataset is None:
        raise S2Error(f"Could not combine the DEM tiles: {message}")
    dataset = None
    return path, pixel_grid, [r for r in rasters if not on_grid(r, pixel_grid)]


def _needs_masking(rasters):
    """Must the VRT treat source nodata as transparent? Only where sources use another nodata value than the
    mosaic's, or overlap with holes in the upper one over data in the lower one (CGIAR's neighbours share a row
    or column of identical heights: no hole shows). Otherwise plain copies give the same pixels about four times
    faster (a VRT with source nodata tests every pixel)."""
    if any(r.nodata is not None and r.nodata != NODATA for r in rasters):
        return True
    footprints = [r.footprint() for r in rasters]
    return any(_overlaps(footprints[i], footprints[j]) and not _upper_covers(rasters[i], rasters[j])
               for i in range(len(rasters)) for j in range(i + 1, len(rasters)))


def _upper_covers(lower, upper, most=4_000_000):
    """Does ``upper`` (later in the VRT, so drawn over ``lower``) have data wherever ``lower`` has, in their
    overlap? Read only for overlaps on one grid of at most ``most`` pixels; False (mask) otherwise."""
    if upper.nodata is None:
        return True
    xres, yres = upper.resolution
    if not on_grid(lower, PixelGrid(xres, yres, upper.transform[0], upper.transform[3])):
        return False
    west, south = max(lower.bounds[0], upper.bounds[0]), max(lower.bounds[1], upper.bounds[1])
    east, north = min(lower.bounds[2], upper.bounds[2]), min(lower.bounds[3], upper.bounds[3])
    width, height = round((east - west) / xres), round((north - south) / yres)
    if width <= 0 or height <= 0:
        return True
    if width * height > most:
        return False
    windows = [(round((west - r.transform[0]) / xres), round((r.transform[3] - north) / yres)) for r in (lower, upper)]
    with _quiet_gdal() as gdal:
        arrays = [_read(gdal, r.path, x, y, width, height) for r, (x, y) in zip((lower, upper), windows)]
    if any(a is None for a in arrays):
        return False
    below, above = arrays  # both use the mosaic's nodata (or none): _needs_masking checked it
    return not ((above == NODATA) & (below != NODATA)).any()


def _read(gdal, path, x, y, width, height):
    dataset = gdal.Open(path)
    if dataset is None or x < 0 or y < 0 or x + width > dataset.RasterXSize or y + height > dataset.RasterYSize:
        return None
    return dataset.GetRasterBand(1).ReadAsArray(x, y, width, height)


def _wgs84_wkt():
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    return srs.ExportToWkt()


def _sea_tile(cell, pixel_grid, srs_wkt, folder):
    """A sparse GeoTIFF of zeros on the mosaic's grid: no block is ever written, so it costs a few kilobytes."""
    from osgeo import gdal

    west, south, east, north = _snap(cell.bounds, pixel_grid)
    width = round((east - west) / pixel_grid.xres)
    height = round((north - south) / pixel_grid.yres)
    path = os.path.join(folder, f"sea_{cell.name}.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(path, width, height, 1, gdal.GDT_Int16,
                                                   ["SPARSE_OK=TRUE", "TILED=YES"])
    dataset.SetGeoTransform((west, pixel_grid.xres, 0.0, north, 0.0, -pixel_grid.yres))
    dataset.SetProjection(srs_wkt)
    dataset = None
    return path


def _source_path(raster, pixel_grid, folder, index):
    """The raster's path; a VRT that places it 360° away (areas across 180°); then, when it is not on the mosaic's
    grid, a VRT of it resampled onto that grid over its own extent."""
    from osgeo import gdal

    path = raster.path
    west, south, east, north = raster.bounds
    if raster.shift:
        path = os.path.join(folder, f"moved_{index}.vrt")
        # The returned dataset is dropped at once, which writes the VRT.
        if gdal.Translate(path, raster.path, format="VRT", outputBounds=[west, north, east, south]) is None:
            raise S2Error(f"Could not place {raster.path} across 180° of longitude.")
    if not on_grid(raster, pixel_grid):
        path = _regridded(path, raster, pixel_grid, os.path.join(folder, f"regridded_{index}.vrt"))
    return path


def _regridded(source, raster, pixel_grid, path):
    """Nearest neighbour onto the grid, for the pixels whose centres lie in the raster. Done per raster by the
    warper (each target pixel takes the source pixel under its centre) because a mosaic VRT rounds fractional
    windows to whole pixels, which would let a tile claim a column of its neighbour's."""
    from osgeo import gdal

    options = gdal.WarpOptions(format="VRT", outputBounds=_snap(raster.bounds, pixel_grid), xRes=pixel_grid.xres,
                               yRes=pixel_grid.yres, resampleAlg="near", errorThreshold=0)
    with _quiet_gdal():
        dataset = gdal.Warp(path, source, options=options)
        message = gdal.GetLastErrorMsg()
    if dataset is None:
        raise S2Error(f"Could not resample {raster.path}: {message}")
    dataset = None
    return path


def _write_output(work, vrt, folder, progress, is_cancelled):
    """OUTPUT from the mosaic VRT, or from a warped VRT of it in the tile's UTM zone."""
    source = vrt
    if work.reproject_to is not None:
        source = warped_vrt(vrt, work.reproject_to, work.resolution, folder)
    translate(source, work.output, progress, is_cancelled, "Writing the merged DEM")


def warped_vrt(vrt, tile, resolution, folder):
    """A VRT of the mosaic warped (bilinear) onto the Sentinel-2 tile's UTM rectangle at ``resolution`` metres;
    109 800 m is a whole number of 30 m and 90 m pixels, so pixels line up with the tile's edges. Transformations
    are exact (errorThreshold 0): GDAL's default approximation may misplace heights by 1/8 of a source pixel
    (11 m for SRTM), and being exact costs about two seconds for a whole tile at 30 m. The VRT is Float32: the
    warper truncates to integers, the GeoTIFF writer rounds."""
    from osgeo import gdal

    xmin, ymin, xmax, ymax = grid.tile_rectangle(tile)
    if tile.epsg >= 32700:  # the rectangle is in extended northing; the south zones add a false northing
        ymin, ymax = ymin + 10_000_000.0, ymax + 10_000_000.0
    path = os.path.join(folder, f"utm_{tile.tile_id}.vrt")
    options = gdal.WarpOptions(format="VRT", dstSRS=f"EPSG:{tile.epsg}", outputBounds=(xmin, ymin, xmax, ymax),
                               xRes=resolution, yRes=resolution, resampleAlg="bilinear", errorThreshold=0,
                               srcNodata=NODATA, dstNodata=NODATA, outputType=gdal.GDT_Float32)
    with _quiet_gdal():
        dataset = gdal.Warp(path, vrt, options=options)
        message = gdal.GetLastErrorMsg()
    if dataset is None:
        raise S2Error(f"Could not reproject the DEM to EPSG:{tile.epsg}: {message}")
    dataset = None
    return path


def translate(source, target, progress, is_cancelled, message, **options):
    """Stream ``source`` (a path; ``options`` as for ``gdal.Translate``, e.g. a window) into a tiled, compressed
    Int16 GeoTIFF at ``target``, through ``target.part``."""
    from osgeo import gdal

    part = target + ".part"
    files.remove(part)
    gdal.ErrorReset()
    window = target + ".vrt"
    try:
        with _quiet_gdal(), _decoding_threads():
            # With options, the window as a VRT: nothing is read yet.
            source = gdal.Translate(window, source, format="VRT", **options) if options else gdal.Open(source)
            error = gdal.GetLastErrorMsg()
            if source is not None:
                with _bounded_cache(source.RasterXSize):
                    error = _copy_windows(source, part, progress, is_cancelled, message)
    except RuntimeError as raised:  # when a caller switched GDAL to exceptions
        error = str(raised)
    finally:
        source = None
        if options:
            files.remove(window)
    if error or not os.path.exists(part):
        files.remove(part)
        if is_cancelled():
            raise Cancelled()
        raise S2Error(f"Could not write {target}: {error or 'GDAL gave no reason'}")
    os.replace(part, target)
    return target


def _copy_windows(source, part, progress, is_cancelled, message):
    """One pass over ``source`` in windows of one row of output blocks (at most :data:`WINDOW_COLUMNS` wide, so
    memory does not grow with the mosaic), converted to Int16 (GDAL rounds floats) and written block-aligned, so
    every block is compressed once, when complete. Returns GDAL's error message, '' when written; stops at a
    cancel. This loop is about 1.4 times faster than ``gdal.Translate`` on the same VRT (``make bench``)."""
    from osgeo import gdal

    width, height = source.RasterXSize, source.RasterYSize
    dataset = gdal.GetDriverByName("GTiff").Create(part, width, height, 1, gdal.GDT_Int16, list(CREATION_OPTIONS))
    if dataset is None:
        return gdal.GetLastErrorMsg()
    dataset.SetGeoTransform(source.GetGeoTransform())
    dataset.SetProjection(source.GetProjection())
    dataset.SetMetadata(source.GetMetadata())
    band, source_band = dataset.GetRasterBand(1), source.GetRasterBand(1)
    nodata = source_band.GetNoDataValue()
    if nodata is not None:
        band.SetNoDataValue(nodata)
    rows = [(y, min(BLOCK, height - y)) for y in range(0, height, BLOCK)]
    for index, (y, rows_here) in enumerate(rows):
        if is_cancelled():
            return "cancelled"
        for x in range(0, width, WINDOW_COLUMNS):
            columns = min(WINDOW_COLUMNS, width - x)
            data = source_band.ReadRaster(x, y, columns, rows_here, buf_type=gdal.GDT_Int16)
            if data is None or band.WriteRaster(x, y, columns, rows_here, data) != 0:
                return gdal.GetLastErrorMsg() or f"could not copy the rows from {y}"
        progress((index + 1) / len(rows), message)
    gdal.ErrorReset()
    dataset = None  # closing writes the last blocks and the header
    return gdal.GetLastErrorMsg() if gdal.GetLastErrorType() >= gdal.CE_Failure else ""


@contextlib.contextmanager
def _decoding_threads():
    """Compressed sources are decoded by all cores (GDAL >= 3.6 does it for reads that span several blocks) while
    this thread reads; thread-local, so other work in QGIS keeps its settings."""
    from osgeo import gdal

    saved = gdal.GetThreadLocalConfigOption("GDAL_NUM_THREADS", None)
    gdal.SetThreadLocalConfigOption("GDAL_NUM_THREADS", "ALL_CPUS")
    try:
        yield
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_NUM_THREADS", saved)


def _bounded_cache(width):
    """A merge reads each block once and writes each once: 64 MB, or 4 KB per column for very wide mosaics (two
    rows of output blocks and a row of source blocks must fit), keeps memory flat."""
    return gdalcache.bounded(max(64 << 20, width * 4096))


# --- the Sen2Cor folder -------------------------------------------------------------------------------------


def _write_sen2cor(work, result, vrt, pixel_grid, rasters, sea, progress, is_cancelled):
    folder = work.sen2cor_folder
    os.makedirs(folder, exist_ok=True)
    if work.dem == SRTM:
        files, links = _srtm_folder(work, vrt, progress, is_cancelled)
    else:
        cells = [c for c in work.cells if c not in sea]
        files, links = _copernicus_folder(work, cells, vrt, pixel_grid, rasters, progress, is_cancelled)
    result.sen2cor_folder, result.sen2cor_files, result.links = folder, files, links
    result.dem_directory, result.dem_reference = folder, SPECS[work.dem].reference
    if work.dem != SRTM and result.sea_level:
        result.notes.append("The Sen2Cor folder has no file for the sea-level tiles, as ESA's DEM downloader "
                            "leaves them out.")


def _srtm_folder(work, vrt, progress, is_cancelled):
    """The whole mosaic under every name Sen2Cor asks for (one file, linked), the Sen2Cor 2.9 workaround."""
    folder = work.sen2cor_folder
    paths = [os.path.join(folder, name + ".tif") for name in work.sen2cor_names]
    first = paths[0]
    if work.reproject_to is None:
        kinds = [link(work.output, first, symbolic=False)]  # OUTPUT is that mosaic already
    else:
        translate(vrt, first, progress, is_cancelled, "Writing the mosaic for Sen2Cor")
        kinds = [HARD]
    kinds += [link(first, path) for path in paths[1:]]
    return [os.path.basename(p) for p in paths], _weakest(kinds)


def _copernicus_folder(work, cells, vrt, pixel_grid, rasters, progress, is_cancelled):
    """Flat ``Copernicus_DSM_*_DEM.tif`` files: each published tile linked, other sources cut per cell."""
    whole = {r.cell: r for r in rasters if r.cell is not None}
    files, kinds = [], []
    cells = [c for c in cells if c in whole or not uncovered_cells([c], work.area, rasters)]
    for index, cell in enumerate(cells):
        check_cancelled(is_cancelled)
        path = os.path.join(work.sen2cor_folder, cell.sen2cor_file)
        if cell in whole:
            kinds.append(link(whole[cell].path, path, symbolic=False))
        else:
            _cut(vrt, cell, pixel_grid, path, scaled(progress, index / len(cells), (index + 1) / len(cells)),
                 is_cancelled)
            kinds.append(HARD)
        files.append(cell.sen2cor_file)
    return files, _weakest(kinds)


def _cut(vrt, cell, pixel_grid, path, progress, is_cancelled):
    """One cell of the mosaic as its own tile, georeferenced at its real longitude."""
    west, south, east, north = _snap(cell.bounds, pixel_grid)
    shift = cell.west - cell.lon0
    translate(vrt, path, progress, is_cancelled, f"Writing {os.path.basename(path)}",
              projWin=[west, north, east, south], outputBounds=[west + shift, north, east + shift, south])


def link(source, dest, symbolic=True):
    """Put ``source`` at ``dest`` (atomically, replacing it): a hard link where the file system allows, else a
    relative symbolic link (only when ``symbolic``: links to files outside the folder could dangle), else a copy.
    Returns which of :data:`HARD`, :data:`SYMBOLIC`, :data:`COPY`."""
    temp = dest + ".part"
    files.remove(temp)
    try:
        os.link(source, temp)
        kind = HARD
    except OSError:
        kind = _symlink(source, temp) if symbolic else None
        if kind is None:
            shutil.copyfile(source, temp)
            kind = COPY
    os.replace(temp, dest)
    return kind


def _symlink(source, temp):
    try:
        os.symlink(os.path.relpath(source, os.path.dirname(temp)), temp)
    except (OSError, NotImplementedError):  # Windows without the privilege, file systems without links
        return None
    return SYMBOLIC


def _weakest(kinds):
    for kind in (COPY, SYMBOLIC, HARD):
        if kind in kinds:
            return kind
    return ""
