"""The Sentinel-2 tiling grid, computed offline from the MGRS 100 km squares.

A tile is an MGRS square's west and north edges extended 109 800 m east and south, with the upper-left corner
snapped to a 60 m grid counted from the equator. Working in "extended northing" (the UTM north projection
of the zone, negative south of the equator) makes that snapping one formula for both hemispheres:
``ULY = ceil((N0 + 100 km) / 60) * 60`` where N0 is the square's southern edge.

Which squares exist follows the UTM zones with their exceptions (31V/32V around Norway; 31X, 33X, 35X and 37X
over Svalbard, with no 32X, 34X, 36X) between 80°S and 84°N. A square that crosses a latitude band boundary
is one tile, named after the band of its centre (the catalogue names 50TMK and 13SFR where a
point-based MGRS converter says 50SMK and 13RFR).
"""

import functools
import math
import re
from collections import namedtuple

from . import geometry as geom
from .errors import ParameterError

TILE_SIZE = 109_800.0
SQUARE = 100_000.0
SNAP = 60.0
SOUTH_LIMIT, NORTH_LIMIT = -80.0, 84.0
BANDS = "CDEFGHJKLMNPQRSTUVWX"  # 8° each from 80°S; X spans 72°-84°N
ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
COLUMN_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")  # indexed by zone % 3
TILE_ID = re.compile(r"^T?(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z])([A-HJ-NP-V])$")

Tile = namedtuple("Tile", "tile_id zone epsg ulx uly")
Tile.__doc__ = "A Sentinel-2 tile: id, UTM zone, EPSG code and upper-left corner in that CRS (metres)."


# --- zones --------------------------------------------------------------------------------------------------

def _zone_region(zone):
    """Where a zone exists: (lat_min, lat_max, lon_min, lon_max) boxes, longitudes relative to its meridian."""
    default = (SOUTH_LIMIT, NORTH_LIMIT, -3.0, 3.0)
    if zone not in (31, 32, 33, 34, 35, 36, 37):
        return (default,)
    south = (SOUTH_LIMIT, 56.0, -3.0, 3.0)
    band_v = {31: (56.0, 64.0, -3.0, 0.0), 32: (56.0, 64.0, -6.0, 3.0)}.get(zone, (56.0, 64.0, -3.0, 3.0))
    band_w = (64.0, 72.0, -3.0, 3.0)
    band_x = {31: (72.0, NORTH_LIMIT, -3.0, 6.0), 33: (72.0, NORTH_LIMIT, -6.0, 6.0),
              35: (72.0, NORTH_LIMIT, -6.0, 6.0), 37: (72.0, NORTH_LIMIT, -6.0, 3.0)}.get(zone)
    return tuple(box for box in (south, band_v, band_w, band_x) if box)


def central_meridian(zone):
    return -183.0 + 6.0 * zone


def zone_of_longitude(lon):
    return int(math.floor((lon + 180.0) / 6.0)) % 60 + 1


def relative_longitude(lon, zone):
    """Longitude relative to the zone's central meridian, in -180..180 (no antimeridian jump)."""
    return (lon - central_meridian(zone) + 180.0) % 360.0 - 180.0


@functools.cache
def _transformer(zone, inverse=False):
    from pyproj import Transformer

    utm = f"+proj=utm +zone={zone} +datum=WGS84 +units=m +no_defs"  # north form: negative northing south
    if inverse:
        return Transformer.from_crs(utm, "EPSG:4326", always_xy=True)
    return Transformer.from_crs("EPSG:4326", utm, always_xy=True)


def to_utm(zone, lons, lats):
    """Lon/lat arrays to (easting, extended northing) in the zone."""
    return _transformer(zone).transform(lons, lats)


def to_lonlat(zone, xs, ys):
    """(easting, extended northing) arrays of the zone to lon/lat, longitudes continuous across 180°."""
    import numpy as np

    lons, lats = _transformer(zone, inverse=True).transform(xs, ys)
    cm = central_meridian(zone)
    return (np.asarray(lons) - cm + 180.0) % 360.0 - 180.0 + cm, np.asarray(lats)


# --- squares and tiles --------------------------------------------------------------------------------------

def band_of_latitude(lat):
    return BANDS[min(max(int(math.floor((lat - SOUTH_LIMIT) / 8.0)), 0), len(BANDS) - 1)]


def _square_letters(zone, col, row):
    """MGRS letters of the square with SW corner (col*100 km, row*100 km extended northing)."""
    column = COLUMN_SETS[zone % 3][col - 1]
    row_letter = ROW_LETTERS[(row + (5 if zone % 2 == 0 else 0)) % 20]
    return column + row_letter


def _tile_corner(col, row):
    ulx = math.floor(col * SQUARE / SNAP) * SNAP
    uly = math.ceil((row + 1) * SQUARE / SNAP) * SNAP
    return ulx, uly


def _epsg(zone, uly):
    # A tile's CRS is the hemisphere of its square: squares north of the equator have uly > 0.
    return (32600 if uly > 0 else 32700) + zone


def tile_rectangle(tile):
    """(xmin, ymin, xmax, ymax) of the tile in its zone's extended northing."""
    uly = tile.uly if tile.epsg < 32700 else tile.uly - 10_000_000.0
    return tile.ulx, uly - TILE_SIZE, tile.ulx + TILE_SIZE, uly


@functools.cache
def _square_tile(zone, col, row):
    """The tile of square (col, row) of a zone, or None where the grid has no tile."""
    if not 1 <= col <= 8:
        return None
    region = _zone_region(zone)
    rel_lons, lats = _square_outline(zone, col, row)
    if not _outline_meets_region(rel_lons, lats, region):
        return None
    centre_lon, centre_lat = to_lonlat(zone, (col + 0.5) * SQUARE, (row + 0.5) * SQUARE)
    band = band_of_latitude(float(centre_lat))
    ulx, uly = _tile_corner(col, row)
    epsg = _epsg(zone, uly)
    if epsg >= 32700:
        uly += 10_000_000.0
    return Tile(f"{zone:02d}{band}{_square_letters(zone, col, row)}", zone, epsg, ulx, uly)


def _square_outline(zone, col, row, per_edge=16):
    import numpy as np

    t = np.linspace(0.0, 1.0, per_edge, endpoint=False)
    x0, y0 = col * SQUARE, row * SQUARE
    xs = np.concatenate([x0 + t * SQUARE, np.full_like(t, x0 + SQUARE), x0 + (1 - t) * SQUARE, np.full_like(t, x0)])
    ys = np.concatenate([np.full_like(t, y0), y0 + t * SQUARE, np.full_like(t, y0 + SQUARE), y0 + (1 - t) * SQUARE])
    lons, lats = to_lonlat(zone, xs, ys)
    return lons - central_meridian(zone), lats


def _outline_meets_region(rel_lons, lats, region):
    """Does the square (outline in zone-relative lon/lat) overlap the zone's region with positive area?"""
    square = geom.polygon(list(zip(rel_lons.tolist(), lats.tolist())))
    for lat0, lat1, lon0, lon1 in region:
        if rel_lons.max() <= lon0 or rel_lons.min() >= lon1 or lats.max() <= lat0 or lats.min() >= lat1:
            continue
        box = geom.polygon([(lon0, lat0), (lon1, lat0), (lon1, lat1), (lon0, lat1)])
        overlap = square.Intersection(box)
        if overlap is not None and overlap.GetArea() > 1e-9:
            return True
    return False


def parse_tile_id(text, parameter="TILES"):
    """A tile from its id ('31TCJ' or 'T31TCJ'); ParameterError when it is not a Sentinel-2 tile."""
    match = TILE_ID.match(text.strip().upper())
    if not match:
        raise ParameterError(parameter, f"'{text}' is not a Sentinel-2 tile id (expected e.g. 31TCJ).")
    zone, band = int(match.group(1)), match.group(2)
    column_letter, row_letter = match.group(3), match.group(4)
    columns = COLUMN_SETS[zone % 3]
    if not 1 <= zone <= 60 or column_letter not in columns:
        raise ParameterError(parameter, f"'{text}' is not a Sentinel-2 tile id (no such MGRS square).")
    col = columns.index(column_letter) + 1
    offset = 5 if zone % 2 == 0 else 0
    row_index = (ROW_LETTERS.index(row_letter) - offset) % 20
    for row in range(-100 + row_index % 20, 95, 20):  # every square with this row letter, south to north
        tile = _square_tile(zone, col, row)
        if tile is not None and tile.tile_id[2] == band:
            return tile
    raise ParameterError(parameter, f"'{text}' is not in the Sentinel-2 tiling grid.")


def parse_tile_list(text, parameter="TILES"):
    """Tiles from a comma/space separated list, in the given order, without duplicates."""
    tiles = []
    for token in re.split(r"[\s,;]+", text or ""):
        if token:
            tile = parse_tile_id(token, parameter)
            if tile not in tiles:
                tiles.append(tile)
    return tiles


def tile_outline(tile, per_edge=24):
    """The tile's outline as lon/lat arrays (closed ring), longitudes continuous (may pass ±180)."""
    import numpy as np

    xmin, ymin, xmax, ymax = tile_rectangle(tile)
    t = np.linspace(0.0, 1.0, per_edge, endpoint=False)
    xs = np.concatenate([xmin + t * TILE_SIZE, np.full_like(t, xmax), xmax - t * TILE_SIZE, np.full_like(t, xmin)])
    ys = np.concatenate([np.full_like(t, ymax), ymax - t * TILE_SIZE, np.full_like(t, ymin), ymin + t * TILE_SIZE])
    lons, lats = to_lonlat(tile.zone, xs, ys)
    return np.append(lons, lons[0]), np.append(lats, lats[0])


def tile_geometry_wkt(tile):
    """The tile footprint in EPSG:4326 as MULTIPOLYGON WKT, split at the antimeridian when it crosses it."""
    from osgeo import ogr

    lons, lats = tile_outline(tile)
    polygon = geom.polygon(zip(lons.tolist(), lats.tolist()))
    parts = ogr.Geometry(ogr.wkbMultiPolygon)
    for shift in (-360.0, 0.0, 360.0):
        world = geom.polygon([(-180 + shift, -90), (180 + shift, -90), (180 + shift, 90), (-180 + shift, 90)])
        piece = polygon.Intersection(world)
        if piece is None or piece.IsEmpty() or piece.GetArea() < 1e-12:
            continue
        piece = geom.shifted(piece, -shift)
        for i in range(piece.GetGeometryCount()) if piece.GetGeometryType() == ogr.wkbMultiPolygon else [None]:
            parts.AddGeometry(piece.GetGeometryRef(i) if i is not None else piece)
    return parts.ExportToWkt()


# --- tiles of an area ---------------------------------------------------------------------------------------

Selection = namedtuple("Selection", "tiles optimal uncovered_share notes")
Selection.__doc__ = """Tiles chosen for an area: ``optimal`` is True when a minimal cover was proven smallest,
``uncovered_share`` the part of the area no tile covers (beyond 84°N / 80°S), ``notes`` sentences for the log."""

MAX_SAMPLES = 60_000


def tiles_for_area(aoi, minimal=False, progress=None, is_cancelled=None, time_budget=1.0):
    """Sentinel-2 tiles meeting an area given as OGR geometry, WKT or WKB in EPSG:4326 (lon, lat).

    Longitudes may run past ±180 for areas across the antimeridian. With ``minimal``, the smallest set of
    tiles that covers the area (exact within ``time_budget`` seconds, a greedy bound beyond).
    """
    from .callbacks import check_cancelled, never_cancelled, no_progress

    progress, is_cancelled = progress or no_progress, is_cancelled or never_cancelled
    aoi = _as_geometry(aoi)
    _check_inside_grid(aoi)
    progress(0.05, "Finding the tiles that meet the area")
    candidates = _candidates(aoi, is_cancelled)
    if not candidates:
        raise ParameterError("AOI", "no Sentinel-2 tile meets the area (the grid covers 80°S to 84°N).")
    notes = []
    optimal = None
    if minimal:
        check_cancelled(is_cancelled)
        progress(0.4, f"Choosing the fewest of {len(candidates)} tiles that cover the area")
        chosen, optimal = _minimal_cover(aoi, candidates, time_budget)
        notes.append(("Minimal cover proven: " if optimal else "Best cover found within the time limit: ")
                     + f"{len(chosen)} of {len(candidates)} tiles.")
    else:
        chosen = candidates
    check_cancelled(is_cancelled)
    progress(0.8, "Checking the tiles cover the area")
    chosen, uncovered = _complete_cover(aoi, chosen, candidates)
    if uncovered > 1e-6:
        notes.append(f"{uncovered:.2%} of the area lies outside the Sentinel-2 grid (beyond 84°N or 80°S) "
                     "and is not covered.")
    progress(1.0, "")
    return Selection(sorted(chosen, key=lambda t: t.tile_id), optimal, uncovered, notes)


def _as_geometry(aoi):
    from osgeo import ogr

    if isinstance(aoi, ogr.Geometry):
        geometry = aoi.Clone()
    elif isinstance(aoi, (bytes, bytearray)):
        geometry = ogr.CreateGeometryFromWkb(bytes(aoi))
    else:
        geometry = ogr.CreateGeometryFromWkt(str(aoi))
    if geometry is None or geometry.IsEmpty():
        raise ParameterError("AOI", "the area is empty.")
    geometry.FlattenTo2D()
    return _unwrap_longitudes(geometry)


def _unwrap_longitudes(geometry):
    """Make each ring's longitudes continuous: an edge never spans more than 180° (reprojected areas that
    cross the antimeridian come with jumps from +180 to -180)."""
    import numpy as np

    def unwrap(xs, ys):
        steps = np.diff(xs)
        if not len(steps) or np.abs(steps).max() <= 180.0:
            return xs, ys
        return np.concatenate([[xs[0]], xs[0] + np.cumsum(steps - 360.0 * np.round(steps / 360.0))]), ys

    return geom.map_geometry(geometry, unwrap)


def _check_inside_grid(aoi):
    _, _, lat_min, lat_max = aoi.GetEnvelope()
    if lat_min >= NORTH_LIMIT or lat_max <= SOUTH_LIMIT:
        raise ParameterError("AOI", f"the area ({lat_min:.2f}° to {lat_max:.2f}° latitude) lies outside the "
                                    "Sentinel-2 tiling grid, which covers 80°S to 84°N.")


def _candidate_zones(aoi):
    zones = set()
    for part in geom.parts(aoi):
        lon_min, lon_max, _, lat_max = part.GetEnvelope()
        if lon_max - lon_min >= 300:
            return list(range(1, 61))
        # Tiles reach past their zone's edges: by up to two zones near 84°N where zones are narrow.
        margin = 2 if abs(lat_max) > 70 else 1
        first, last = zone_of_longitude(lon_min), zone_of_longitude(lon_min) + int((lon_max - lon_min) // 6) + 1
        for zone in range(first - margin, last + margin + 1):
            zones.add((zone - 1) % 60 + 1)
    return sorted(zones)


def _in_zone(aoi_lonlat, zone):
    densified = aoi_lonlat.Clone()
    densified.Segmentize(0.05)  # straight lon/lat edges stay close to straight in UTM only when short
    return geom.map_geometry(densified, lambda x, y: to_utm(zone, x, y))


def _candidates(aoi, is_cancelled):
    from .callbacks import check_cancelled

    found = []
    for zone in _candidate_zones(aoi):
        check_cancelled(is_cancelled)
        local = _in_zone(aoi, zone)
        xmin, xmax, ymin, ymax = local.GetEnvelope()
        cols = range(max(1, int(math.floor((xmin - TILE_SIZE) / SQUARE))), min(8, int(xmax // SQUARE)) + 1)
        rows = range(int(math.floor((ymin - SQUARE) / SQUARE)), int(math.floor((ymax + TILE_SIZE) / SQUARE)) + 1)
        for col in cols:
            for row in rows:
                tile = _square_tile(zone, col, row)
                if tile is not None and _meets(local, tile):
                    found.append(tile)
    return found


def _meets(local_aoi, tile):
    xmin, ymin, xmax, ymax = tile_rectangle(tile)
    rect = geom.polygon([(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax)])
    if not local_aoi.Intersects(rect):
        return False
    if local_aoi.GetDimension() < 2:
        return True
    piece = local_aoi.Intersection(rect)
    return piece is not None and piece.GetArea() > 1.0  # m²: ignore tiles that only touch the area


def _samples(aoi):
    """Lon/lat points spread over the area (grid inside polygons plus every boundary vertex)."""
    import numpy as np

    densified = aoi.Clone()
    densified.Segmentize(0.02)
    boundary = densified.Boundary() if densified.GetDimension() == 2 else densified
    points = []

    def collect(g):
        if g.GetGeometryCount():
            for i in range(g.GetGeometryCount()):
                collect(g.GetGeometryRef(i))
        elif g.GetPointCount():
            points.extend(p[:2] for p in g.GetPoints())

    collect(boundary)
    polygons = [part for part in geom.parts(aoi) if part.GetDimension() == 2]
    for part in polygons:  # per part: parts on both sides of 180° must not share one world-wide raster
        points.extend(_interior_grid(part, MAX_SAMPLES // len(polygons)))
    return np.array(points, dtype=float).reshape(-1, 2)


def _interior_grid(aoi, max_samples):
    """Centres of a raster grid laid over the polygon, cells inside it (GDAL rasterisation)."""
    import numpy as np
    from osgeo import gdal, ogr, osr

    lon_min, lon_max, lat_min, lat_max = aoi.GetEnvelope()
    width, height = max(lon_max - lon_min, 1e-9), max(lat_max - lat_min, 1e-9)
    cell = max(math.sqrt(width * height / max(max_samples, 1000)), 0.002)  # about 200 m at the finest
    cols, rows = max(1, int(math.ceil(width / cell))), max(1, int(math.ceil(height / cell)))
    raster = gdal.GetDriverByName("MEM").Create("", cols, rows, 1, gdal.GDT_Byte)
    raster.SetGeoTransform((lon_min, cell, 0, lat_max, 0, -cell))
    source = ogr.GetDriverByName("Memory").CreateDataSource("")
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    layer = source.CreateLayer("aoi", srs, ogr.wkbUnknown)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(aoi)
    layer.CreateFeature(feature)
    gdal.RasterizeLayer(raster, [1], layer, burn_values=[1])
    mask = raster.ReadAsArray().astype(bool)
    r, c = np.nonzero(mask)
    return np.column_stack([lon_min + (c + 0.5) * cell, lat_max - (r + 0.5) * cell])


def _minimal_cover(aoi, candidates, time_budget):
    import numpy as np

    from .setcover import minimum_cover

    points = _samples(aoi)
    masks = np.zeros(len(points), dtype=object)
    for zone in sorted({t.zone for t in candidates}):
        xs, ys = to_utm(zone, points[:, 0], points[:, 1])
        xs, ys = np.asarray(xs), np.asarray(ys)
        for index, tile in enumerate(candidates):
            if tile.zone != zone:
                continue
            xmin, ymin, xmax, ymax = tile_rectangle(tile)
            inside = (xs >= xmin) & (xs <= xmax) & (ys >= ymin) & (ys <= ymax)
            masks[inside] = masks[inside] + (1 << index)
    chosen, optimal = minimum_cover(set(masks.tolist()), len(candidates), time_budget)
    return [candidates[i] for i in chosen], optimal


def _footprint_near(tile, lon_min, lon_max):
    """The tile footprint as an OGR polygon, copies shifted by ±360° so it meets longitudes of the area."""
    from osgeo import ogr

    lons, lats = tile_outline(tile)
    result = ogr.Geometry(ogr.wkbMultiPolygon)
    for shift in (-360.0, 0.0, 360.0):
        if lons.max() + shift >= lon_min and lons.min() + shift <= lon_max:
            result.AddGeometry(geom.polygon(zip((lons + shift).tolist(), lats.tolist())))
    return result


def _complete_cover(aoi, chosen, candidates):
    """Add tiles until the area is covered where the grid reaches; returns (tiles, uncovered share)."""
    lon_min, lon_max, _, _ = aoi.GetEnvelope()
    footprints = {t: _footprint_near(t, lon_min, lon_max) for t in candidates}
    chosen = list(chosen)
    area = aoi.GetArea() if aoi.GetDimension() == 2 else 0.0
    while True:
        left = aoi
        for tile in chosen:
            left = left.Difference(footprints[tile])
        left_area = left.GetArea() if area else 0.0
        if left.IsEmpty() or (area and left_area <= area * 1e-9):
            return chosen, 0.0
        gains = [(left.Intersection(footprints[t]).GetArea() if area else float(left.Intersects(footprints[t])), t)
                 for t in candidates if t not in chosen]
        gain, best = max(gains, default=(0.0, None), key=lambda g: g[0])
        if best is None or gain <= 0:
            return chosen, (left_area / area if area else 1.0)
        chosen.append(best)
