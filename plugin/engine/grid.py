"""The Sentinel-2 tiling grid: ESA's tiles exactly, from the table the plugin ships.

ESA's tiling-grid KML (S2A_OPER_GIP_TILPAR) defines 56,686 tiles, each with its EPSG code and the upper-left
corner of its 109,800 m square in that CRS. ``resources/sentinel2_tiles.csv.gz`` holds that table (rebuilt by
``scripts/build_grid.py``, origin and licence in ``resources/README.md``); it is read on first use, once. A tile id
the table does not hold is refused: the MGRS rule alone produces squares ESA never made (the westernmost
partial column of each zone) and misses some it did (band C of Antarctica, 31V around Norway).

Areas are read as RFC 7946 says: edges are straight in longitude/latitude, an area across the antimeridian
comes split at 180° (or with longitudes running past ±180); a ring spanning -179.95 to 179.95 goes round the
globe. Work is done per 2° cell of the area, so that continents and the whole world stay fast.
"""

import functools
import gzip
import math
import os
import re
from collections import namedtuple

from . import geometry as geom
from .errors import ParameterError

DATA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources", "sentinel2_tiles.csv.gz")
TILE_SIZE = 109_800.0
SOUTH_LIMIT, NORTH_LIMIT = -80.0, 84.0  # the MGRS bands; ESA's tiles reach a little beyond both
COLUMN_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")  # MGRS column letters, indexed by zone % 3
TILE_ID = re.compile(r"^T?(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z])([A-HJ-NP-V])$")
CELL = 2.0  # degrees: the area is cut into cells of this size so that geometry operations stay small
MIN_AREA = 1e-10  # deg² (about 1 m²): tiles that only touch the area are not counted

Tile = namedtuple("Tile", "tile_id zone epsg ulx uly")
Tile.__doc__ = "A Sentinel-2 tile: id, UTM zone, EPSG code and upper-left corner in that CRS (metres)."


# --- projections --------------------------------------------------------------------------------------------

def central_meridian(zone):
    return -183.0 + 6.0 * zone


def zones_of(lons, lats):
    """The UTM zones of points (arrays), with the Norway (32V) and Svalbard (31X-37X) exceptions."""
    import numpy as np

    lons = (np.asarray(lons, dtype=float) + 180.0) % 360.0 - 180.0
    lats = np.asarray(lats, dtype=float)
    zones = np.floor((lons + 180.0) / 6.0).astype(int) % 60 + 1
    zones[(lats >= 56.0) & (lats < 64.0) & (lons >= 3.0) & (lons < 12.0)] = 32
    for zone, west, east in ((31, 0.0, 9.0), (33, 9.0, 21.0), (35, 21.0, 33.0), (37, 33.0, 42.0)):
        zones[(lats >= 72.0) & (lons >= west) & (lons < east)] = zone
    return zones


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


# --- the table ----------------------------------------------------------------------------------------------

class _Grid:
    """ESA's tiles with their lon/lat boxes and centres (longitudes continuous around each tile's zone). Looking
    a tile up by id reads the table only; the boxes (60 zones of projections, half a second) are computed the
    first time an area is searched."""

    def __init__(self, path=DATA_FILE):
        with gzip.open(path, "rt", encoding="ascii") as handle:
            lines = handle.read().split()
        if lines[0] != "tile_id,epsg,ulx,uly":
            raise ValueError(f"{path} is not a Sentinel-2 grid table")
        self.tiles = []
        for line in lines[1:]:
            tile_id, epsg, ulx, uly = line.split(",")
            self.tiles.append(Tile(tile_id, int(tile_id[:2]), int(epsg), float(ulx), float(uly)))
        self.by_id = {t.tile_id: i for i, t in enumerate(self.tiles)}

    @functools.cached_property
    def _boxes(self):
        import numpy as np

        n = len(self.tiles)
        box = np.zeros((n, 4))  # lon_min, lon_max, lat_min, lat_max
        centre = np.zeros((n, 2))
        zones = np.array([t.zone for t in self.tiles])
        for zone in np.unique(zones).tolist():
            index = np.nonzero(zones == zone)[0]
            rects = np.array([tile_rectangle(self.tiles[i]) for i in index])
            xs, ys = _ring_points(rects, per_edge=3)
            lons, lats = to_lonlat(zone, xs, ys)
            margin = 0.01  # latitude bulges a little between samples of an edge
            box[index] = np.column_stack([lons.min(1), lons.max(1), lats.min(1) - margin, lats.max(1) + margin])
            centre[index] = np.column_stack(to_lonlat(zone, rects[:, [0, 2]].mean(1), rects[:, [1, 3]].mean(1)))
        return box, centre

    @property
    def box(self):
        return self._boxes[0]

    @property
    def centre(self):
        return self._boxes[1]

    @property
    def south(self):  # how far the tiles reach: areas beyond are refused
        return float(self.box[:, 2].min())

    @property
    def north(self):
        return float(self.box[:, 3].max())

    @functools.lru_cache(maxsize=65536)  # noqa: B019 (one _Grid per process, kept for its life)
    def footprint(self, index, shift=0.0):
        """The tile's outline as an OGR polygon in lon/lat, moved by ``shift`` degrees of longitude (8 points
        an edge: within a metre of the UTM edge for the cover tests)."""
        lons, lats = tile_outline(self.tiles[index], per_edge=8)
        return geom.polygon_from_arrays(lons + shift, lats)


@functools.cache
def _grid():
    return _Grid()


def all_tiles():
    """Every tile of ESA's grid, sorted by id."""
    return list(_grid().tiles)


def tile_rectangle(tile):
    """(xmin, ymin, xmax, ymax) of the tile in its zone's extended northing (negative south of the equator)."""
    uly = tile.uly if tile.epsg < 32700 else tile.uly - 10_000_000.0
    return tile.ulx, uly - TILE_SIZE, tile.ulx + TILE_SIZE, uly


def parse_tile_id(text, parameter="TILES"):
    """A tile from its id ('31TCJ' or 'T31TCJ'); ParameterError when ESA's grid has no such tile."""
    match = TILE_ID.match(str(text).strip().upper())
    if not match:
        raise ParameterError(parameter, f"'{text}' is not a Sentinel-2 tile id (expected e.g. 31TCJ).")
    tile_id = f"{int(match.group(1)):02d}{match.group(2)}{match.group(3)}{match.group(4)}"
    table = _grid()
    if tile_id in table.by_id:
        return table.tiles[table.by_id[tile_id]]
    nearest = _same_row_neighbours(tile_id)
    hint = f" (nearest real tiles: {', '.join(nearest)})" if nearest else ""
    raise ParameterError(parameter, f"'{text}' is not in the Sentinel-2 tiling grid{hint}.")


def _same_row_neighbours(tile_id):
    """Real tiles of the same zone, band and row whose column is closest to the id's column."""
    zone = int(tile_id[:2])
    if not 1 <= zone <= 60:
        return []
    columns = COLUMN_SETS[zone % 3]
    if tile_id[3] not in columns:
        return []
    wanted = columns.index(tile_id[3])
    table = _grid()
    found = [(abs(columns.index(c) - wanted), f"{tile_id[:3]}{c}{tile_id[4]}") for c in columns
             if c != tile_id[3] and f"{tile_id[:3]}{c}{tile_id[4]}" in table.by_id]
    best = min((d for d, _ in found), default=None)
    return [name for d, name in found if d == best]


def parse_tile_list(text, parameter="TILES"):
    """Tiles from a comma/space separated list, in the given order, without duplicates."""
    tiles = []
    for token in re.split(r"[\s,;]+", text or ""):
        if token:
            tile = parse_tile_id(token, parameter)
            if tile not in tiles:
                tiles.append(tile)
    return tiles


def _ring_points(rects, per_edge):
    """Points along the edges of rectangles (n x (xmin, ymin, xmax, ymax)), clockwise from the upper-left
    corner, ``per_edge`` a side: arrays of shape (n, 4 * per_edge), not closed."""
    import numpy as np

    rects = np.atleast_2d(np.asarray(rects, dtype=float))
    xmin, ymin, xmax, ymax = (rects[:, [i]] for i in range(4))
    t = np.linspace(0.0, 1.0, per_edge, endpoint=False)
    ones = np.ones_like(t)
    xs = np.concatenate([xmin + t * (xmax - xmin), xmax * ones, xmax - t * (xmax - xmin), xmin * ones], axis=1)
    ys = np.concatenate([ymax * ones, ymax - t * (ymax - ymin), ymin * ones, ymin + t * (ymax - ymin)], axis=1)
    return xs, ys


def tile_outline(tile, per_edge=24):
    """The tile's outline as lon/lat arrays (closed ring), longitudes continuous (may pass ±180)."""
    import numpy as np

    xs, ys = _ring_points(tile_rectangle(tile), per_edge)
    lons, lats = to_lonlat(tile.zone, xs[0], ys[0])
    return np.append(lons, lons[0]), np.append(lats, lats[0])


def tile_geometry_wkt(tile):
    """The tile footprint in EPSG:4326 as MULTIPOLYGON WKT, split at the antimeridian when it crosses it."""
    from osgeo import ogr

    lons, lats = tile_outline(tile)
    polygon = geom.polygon_from_arrays(lons, lats)
    parts = ogr.Geometry(ogr.wkbMultiPolygon)
    if lons.min() >= -180.0 and lons.max() <= 180.0:  # most tiles: nothing to split
        parts.AddGeometry(polygon)
        return parts.ExportToWkt()
    for shift in (-360.0, 0.0, 360.0):
        world = geom.polygon([(-180 + shift, -90), (180 + shift, -90), (180 + shift, 90), (-180 + shift, 90)])
        piece = polygon.Intersection(world)
        if piece is None or piece.IsEmpty() or piece.GetArea() < 1e-12:
            continue
        piece = geom.shifted(piece, -shift)
        for part in geom.parts(piece):
            parts.AddGeometry(part)
    return parts.ExportToWkt()


# --- tiles of an area ---------------------------------------------------------------------------------------

Selection = namedtuple("Selection", "tiles optimal uncovered_share notes")
Selection.__doc__ = """Tiles chosen for an area: ``optimal`` is True when a minimal cover was proven smallest,
``uncovered_share`` the part of the area no tile covers (beyond the grid's reach), ``notes`` sentences for the log."""

MAX_SAMPLES = 60_000
EXACT_LIMIT = 120  # candidate tiles up to which the minimal cover is searched exactly (bitmask branch and bound)


def tiles_for_area(aoi, minimal=False, progress=None, is_cancelled=None, time_budget=1.0, prefer_own_zone=True):
    """Sentinel-2 tiles meeting an area given as OGR geometry, WKT or WKB in EPSG:4326 (lon, lat).

    With ``minimal``, the fewest tiles that cover the area, preferring tiles that hold the area in their own
    UTM zone (exact within ``time_budget`` seconds for up to EXACT_LIMIT candidates, greedy beyond). Without
    ``prefer_own_zone``, ties between covers of the same size go to the lower tile ids.
    """
    from .callbacks import check_cancelled, never_cancelled, no_progress

    progress, is_cancelled = progress or no_progress, is_cancelled or never_cancelled
    aoi = _as_geometry(aoi)
    _check_inside_grid(aoi)
    progress(0.05, "Finding the tiles that meet the area")
    area = _Area(aoi)
    candidates = area.candidates(is_cancelled)
    if not candidates:
        raise ParameterError("AOI", f"no Sentinel-2 tile meets the area (ESA's tiles reach from {_reach()}).")
    notes = []
    optimal = None
    if minimal:
        check_cancelled(is_cancelled)
        progress(0.4, f"Choosing the fewest of {len(candidates)} tiles that cover the area")
        chosen, optimal = _minimal_cover(aoi, candidates, time_budget, is_cancelled, prefer_own_zone)
        check_cancelled(is_cancelled)
        progress(0.8, "Checking the tiles cover the area")
        chosen, uncovered = area.complete_cover(chosen, candidates, is_cancelled)
        notes.append(("Minimal cover proven: " if optimal else "Best cover found: ")
                     + f"{len(chosen)} of {len(candidates)} tiles.")
    else:
        check_cancelled(is_cancelled)
        progress(0.8, "Checking the tiles cover the area")
        chosen, uncovered = area.complete_cover(candidates, candidates, is_cancelled, edges_only=True)
    if uncovered > 1e-6:
        notes.append(f"{uncovered:.2%} of the area lies outside the Sentinel-2 grid (beyond 84°N or 80°S) "
                     "and is not covered.")
    progress(1.0, "")
    table = _grid()
    return Selection(sorted((table.tiles[i] for i in chosen), key=lambda t: t.tile_id), optimal, uncovered, notes)


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
    return geometry


def _reach():
    table = _grid()
    return f"{-table.south:.1f}°S to {table.north:.1f}°N"


def _check_inside_grid(aoi):
    # ESA's tiles reach past the MGRS bands (to about 83.8°S and 84.7°N): refuse only what no tile can meet.
    table = _grid()
    _, _, lat_min, lat_max = aoi.GetEnvelope()
    if lat_min >= table.north or lat_max <= table.south:
        raise ParameterError("AOI", f"the area ({lat_min:.2f}° to {lat_max:.2f}° latitude) lies outside the "
                                    f"Sentinel-2 tiling grid, whose tiles reach from {_reach()}.")


class _Area:
    """The area cut into CELL° cells, with the tiles' footprints tested cell by cell."""

    def __init__(self, aoi):
        self.aoi = aoi
        self.polygonal = aoi.GetDimension() == 2
        self.total = aoi.GetArea() if self.polygonal else 0.0
        self.envelope = aoi.GetEnvelope()
        self._pieces = {}

    def piece(self, cx, cy):
        """(piece of the area in cell (cx, cy) or None, its area, whether it fills the cell)."""
        key = (cx, cy)
        if key not in self._pieces:
            box = _cell_box(cx, cy)
            piece = self.aoi.Intersection(box)
            area = _area(piece)
            if not area:
                self._pieces[key] = (None, 0.0, False)
            else:
                self._pieces[key] = (piece, area, area >= CELL * CELL * (1 - 1e-9))
        return self._pieces[key]

    def cells(self, box):
        """Cells that a lon/lat box meets, clipped to the area's envelope."""
        lon_min, lon_max, lat_min, lat_max = self.envelope
        x0, x1 = max(box[0], lon_min), min(box[1], lon_max)
        y0, y1 = max(box[2], lat_min), min(box[3], lat_max)
        if x0 > x1 or y0 > y1:
            return []
        return [(cx, cy) for cx in range(math.floor(x0 / CELL), math.floor(x1 / CELL) + 1)
                for cy in range(math.floor(y0 / CELL), math.floor(y1 / CELL) + 1)]

    def candidates(self, is_cancelled):
        """Indices of the tiles meeting the area, with positive area for polygons."""
        import numpy as np

        from .callbacks import check_cancelled

        table = _grid()
        lon_min, lon_max, lat_min, lat_max = self.envelope
        found = set()
        for shift in (-360.0, 0.0, 360.0):
            box = table.box + [shift, shift, 0.0, 0.0]
            near = np.nonzero((box[:, 0] <= lon_max) & (box[:, 1] >= lon_min) &
                              (box[:, 2] <= lat_max) & (box[:, 3] >= lat_min))[0]
            for count, index in enumerate(near.tolist()):
                if count % 256 == 0:
                    check_cancelled(is_cancelled)
                if index not in found and self._meets(index, shift, box[index], table.centre[index]):
                    found.add(index)
        return sorted(found, key=lambda i: table.tiles[i].tile_id)

    def _meets(self, index, shift, box, centre):
        table = _grid()
        if not self.polygonal:
            return self.aoi.Intersects(table.footprint(index, shift))
        cx, cy = math.floor((centre[0] + shift) / CELL), math.floor(centre[1] / CELL)
        if self.envelope[0] <= centre[0] + shift <= self.envelope[1] and self.piece(cx, cy)[2]:
            return True  # the tile's centre lies in a cell the area fills
        footprint = table.footprint(index, shift)
        for cell in self.cells(box):
            piece, _, _ = self.piece(*cell)
            if piece is not None and footprint.Intersects(piece):
                if _area(footprint.Intersection(piece)) > MIN_AREA:
                    return True
        return False

    def complete_cover(self, chosen, candidates, is_cancelled, edges_only=False):
        """Add candidates until every cell of the area is covered where the grid reaches; returns (tiles,
        uncovered share). ``edges_only``: every candidate is chosen, so only cells near the grid's northern
        and southern reach can be left uncovered."""
        from .callbacks import check_cancelled

        table = _grid()
        chosen = list(chosen)
        if not self.polygonal:
            return chosen, 0.0
        taken = set(chosen)
        placed = {}  # cell -> [(footprint, index)] of candidates whose box meets the cell
        for index in candidates:
            for shift in (-360.0, 0.0, 360.0):
                box = table.box[index] + [shift, shift, 0.0, 0.0]
                for cell in self.cells(box):
                    placed.setdefault(cell, []).append((index, shift))
        uncovered = 0.0
        for count, cell in enumerate(sorted(placed)):
            if count % 64 == 0:
                check_cancelled(is_cancelled)
            if edges_only and SOUTH_LIMIT + CELL < cell[1] * CELL < NORTH_LIMIT - 2 * CELL:
                continue
            piece, area, _ = self.piece(*cell)
            if piece is None or area <= MIN_AREA:
                continue
            left = piece
            for index, shift in placed[cell]:
                if index in taken:
                    left = left.Difference(table.footprint(index, shift))
            while _area(left) > max(MIN_AREA, area * 1e-9):
                gains = [(_area(left.Intersection(table.footprint(i, s))), -i, i, s)
                         for i, s in placed[cell] if i not in taken]
                gain, _, best, shift = max(gains, default=(0.0, 0, None, 0.0))
                if best is None or gain <= MIN_AREA:
                    break
                chosen.append(best)
                taken.add(best)
                left = left.Difference(table.footprint(best, shift))
            uncovered += _area(left)
        share = uncovered / self.total if self.total else 0.0
        return chosen, share if share > 1e-9 else 0.0


def _area(geometry):
    """Area of an OGR geometry, 0 for None, empty or lower-dimensional results of overlay operations."""
    if geometry is None or geometry.IsEmpty() or geometry.GetDimension() < 2:
        return 0.0
    return geometry.GetArea()


def _cell_box(cx, cy):
    x0, y0 = cx * CELL, cy * CELL
    return geom.polygon([(x0, y0), (x0 + CELL, y0), (x0 + CELL, y0 + CELL), (x0, y0 + CELL)])


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


def _point_tiles(points, candidates):
    """For each sample point, the candidate positions (into ``candidates``) whose rectangle holds it, and each
    candidate's count of points that lie in the tile's own UTM zone."""
    import numpy as np

    table = _grid()
    members = [[] for _ in range(len(points))]
    own = [0] * len(candidates)
    point_zones = zones_of(points[:, 0], points[:, 1]) if len(points) else np.array([])
    by_zone = {}
    for position, index in enumerate(candidates):
        by_zone.setdefault(table.tiles[index].zone, []).append(position)
    for zone, positions in sorted(by_zone.items()):
        boxes = table.box[[candidates[p] for p in positions]]
        lon_min, lon_max = boxes[:, 0].min(), boxes[:, 1].max()
        lons = (points[:, 0] - lon_min) % 360.0 + lon_min  # the copy of each point nearest the zone's tiles
        near = np.nonzero((lons <= lon_max) & (points[:, 1] >= boxes[:, 2].min()) &
                          (points[:, 1] <= boxes[:, 3].max()))[0]
        if not len(near):
            continue
        xs, ys = to_utm(zone, lons[near], points[near, 1])
        xs, ys = np.asarray(xs), np.asarray(ys)
        for position in positions:
            tile = table.tiles[candidates[position]]
            xmin, ymin, xmax, ymax = tile_rectangle(tile)
            inside = near[(xs >= xmin) & (xs <= xmax) & (ys >= ymin) & (ys <= ymax)]
            for point in inside.tolist():
                members[point].append(position)
            own[position] = int((point_zones[inside] == zone).sum()) if len(inside) else 0
    return members, own


def _minimal_cover(aoi, candidates, time_budget, is_cancelled, prefer_own_zone=True):
    """Candidate indices of a smallest cover of the area's sample points, and whether it is proven smallest."""
    from .callbacks import check_cancelled
    from .setcover import greedy_cover, improve_cover, minimum_cover

    points = _samples(aoi)
    members, own = _point_tiles(points, candidates)
    if not prefer_own_zone:
        own = [0] * len(candidates)
    check_cancelled(is_cancelled)
    elements = {tuple(sorted(m)) for m in members if m}
    # Prefer tiles holding more of the area in their own zone: search them first, and swap them in after.
    order = sorted(range(len(candidates)), key=lambda p: (-own[p], p))
    if len(candidates) <= EXACT_LIMIT:
        rank = {p: r for r, p in enumerate(order)}
        masks = [sum(1 << rank[p] for p in e) for e in elements]
        chosen, optimal = minimum_cover(masks, len(candidates), time_budget)
        chosen = [order[r] for r in chosen]
    else:
        chosen, optimal = greedy_cover(elements, len(candidates), priority=own), False
    chosen = improve_cover(chosen, elements, own)
    return [candidates[p] for p in chosen], optimal
