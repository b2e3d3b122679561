"""A catalogue search request: filters validated once, the AOI simplified for sending, client-side matching.

Every catalogue maps the filters it can to its own query language and applies :meth:`Query.matches` to what
comes back, so a filter a catalogue cannot apply server-side is still applied (never silently dropped).
"""

import dataclasses
import datetime as dt
import functools

from . import geometry as geom
from .errors import ParameterError

LEVELS = ("L1C", "L2A")
PLATFORMS = ("S2A", "S2B", "S2C", "S2D")
DIRECTIONS = ("ASCENDING", "DESCENDING")
MISSION_START = dt.datetime(2015, 6, 23, tzinfo=dt.timezone.utc)  # Sentinel-2A launch
MAX_VERTICES = 40


@dataclasses.dataclass
class Query:
    start: dt.datetime
    end: dt.datetime
    level: str = "L1C"
    aoi: list = None               # covering polygons to send: lists of (lon, lat) rings, lon in -180..180
    aoi_wkb: bytes = None          # the exact area, for client-side refinement
    max_cloud: float = None
    platform: str = None
    relative_orbit: int = None
    orbit_direction: str = None
    tiles: tuple = ()
    max_results: int = 0           # 0: no limit

    def __post_init__(self):
        self.start, self.end = _utc(self.start), _utc(self.end)
        if self.end < self.start:
            raise ParameterError("END", f"the end ({self.end:%Y-%m-%d}) is before the start ({self.start:%Y-%m-%d}).")
        if self.level not in LEVELS:
            raise ParameterError("LEVEL", f"'{self.level}' is not one of {', '.join(LEVELS)}.")
        if self.max_cloud is not None and not 0 <= self.max_cloud <= 100:
            raise ParameterError("MAX_CLOUD", f"{self.max_cloud:g} is outside 0–100 %.")
        if self.platform is not None and self.platform not in PLATFORMS:
            raise ParameterError("PLATFORM", f"'{self.platform}' is not one of {', '.join(PLATFORMS)}.")
        if self.relative_orbit is not None and not 1 <= self.relative_orbit <= 143:
            raise ParameterError("RELATIVE_ORBIT", f"{self.relative_orbit} is outside 1–143.")
        if self.orbit_direction is not None and self.orbit_direction not in DIRECTIONS:
            raise ParameterError("ORBIT_DIRECTION", f"'{self.orbit_direction}' is not one of {', '.join(DIRECTIONS)}.")
        if self.max_results is not None and self.max_results < 0:
            raise ParameterError("MAX_RESULTS", "must be 0 (no limit) or more.")
        self.tiles = tuple(t.upper().lstrip("T") if len(t) == 6 else t.upper() for t in self.tiles)
        if self.aoi is None and self.aoi_wkb is not None:
            self.aoi = covering_polygons(self.aoi_wkb)

    @property
    def product_type(self):
        return "S2MSI1C" if self.level == "L1C" else "S2MSI2A"

    def aoi_wkt(self):
        """The covering polygons as WKT (POLYGON or MULTIPOLYGON), or None without AOI."""
        if not self.aoi:
            return None
        polygons = ["((" + ",".join(f"{x:.6f} {y:.6f}" for x, y in ring) + "))" for ring in self.aoi]
        return f"POLYGON{polygons[0]}" if len(polygons) == 1 else f"MULTIPOLYGON({','.join(polygons)})"

    def aoi_geojson(self):
        """The covering polygons as a GeoJSON geometry, or None."""
        if not self.aoi:
            return None
        rings = [[[round(x, 6), round(y, 6)] for x, y in ring] for ring in self.aoi]
        if len(rings) == 1:
            return {"type": "Polygon", "coordinates": [rings[0]]}
        return {"type": "MultiPolygon", "coordinates": [[ring] for ring in rings]}

    def bbox(self):
        """(west, south, east, north) of the covering polygons, or None."""
        if not self.aoi:
            return None
        xs = [x for ring in self.aoi for x, _ in ring]
        ys = [y for ring in self.aoi for _, y in ring]
        return min(xs), min(ys), max(xs), max(ys)

    def matches(self, footprint):
        """Does a catalogue result satisfy every filter? (Catalogues call this on everything they return.)"""
        checks = (
            self.start <= footprint.sensing_start <= self.end,
            not footprint.level or footprint.level == self.level,
            self.max_cloud is None or footprint.cloud_cover is None or footprint.cloud_cover <= self.max_cloud,
            self.platform is None or footprint.platform == self.platform,
            self.relative_orbit is None or footprint.relative_orbit == self.relative_orbit,
            self.orbit_direction is None or not footprint.orbit_direction
            or footprint.orbit_direction.upper() == self.orbit_direction,
            not self.tiles or footprint.tile_id in self.tiles,
        )
        return all(checks) and self._meets_area(footprint.geometry)

    def _meets_area(self, geometry):
        if self.aoi_wkb is None or not geometry:
            return True
        return _intersects_area(_area_geometry(bytes(self.aoi_wkb)), geometry)


def _utc(value):
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def covering_polygons(aoi_wkb, max_vertices=MAX_VERTICES):
    """Few-vertex polygons that cover the area, in -180..180 (split at the antimeridian).

    Catalogues reject or time out on complex polygons, so each part is replaced by its convex hull; a hull
    with too many vertices is grown by a tolerance and simplified by the same tolerance, which keeps it
    covering. Parts whose hulls overlap are merged; more than a handful become one hull.
    """
    from osgeo import ogr

    geometry = ogr.CreateGeometryFromWkb(bytes(aoi_wkb))
    pieces = []
    for part in _split_at_antimeridian(geometry):
        hull = part.ConvexHull()
        if hull.GetGeometryName() != "POLYGON":  # points and lines: a small box around them
            hull = hull.Buffer(0.001, 2).ConvexHull()
        pieces.append(_few_vertices(hull, max_vertices))
    pieces = _merge_overlapping(pieces)
    if len(pieces) > 4:
        union = ogr.Geometry(ogr.wkbMultiPolygon)
        for piece in pieces:
            union.AddGeometry(piece)
        pieces = [_few_vertices(union.ConvexHull(), max_vertices)]
    return [_ring(piece) for piece in pieces]


def _split_at_antimeridian(geometry):
    from osgeo import ogr

    parts = []
    for shift in (-360.0, 0.0, 360.0):
        world = ogr.CreateGeometryFromWkt(
            f"POLYGON(({-180 + shift} -90,{180 + shift} -90,{180 + shift} 90,{-180 + shift} 90,{-180 + shift} -90))")
        piece = geometry.Intersection(world)
        if piece is None or piece.IsEmpty():
            continue
        piece = geom.shifted(piece, -shift)
        count = piece.GetGeometryCount()
        if piece.GetGeometryName().startswith(("MULTI", "GEOMETRYCOLLECTION")):
            parts.extend(piece.GetGeometryRef(i).Clone() for i in range(count))
        else:
            parts.append(piece)
    return [p for p in parts if not p.IsEmpty()]


def _few_vertices(hull, max_vertices):
    tolerance = 0.001
    while hull.GetGeometryRef(0).GetPointCount() - 1 > max_vertices:
        hull = hull.Buffer(tolerance, 1).Simplify(tolerance).ConvexHull()
        tolerance *= 2
    return hull


def _merge_overlapping(pieces):
    merged = True
    while merged:
        merged = False
        for i, a in enumerate(pieces):
            for j in range(i + 1, len(pieces)):
                if a.Intersects(pieces[j]):
                    pieces[i] = a.Union(pieces[j]).ConvexHull()
                    del pieces[j]
                    merged = True
                    break
            if merged:
                break
    return pieces


def _ring(polygon):
    ring = polygon.GetGeometryRef(0)
    points = [(min(max(x, -180.0), 180.0), min(max(y, -90.0), 90.0)) for x, y, *_ in ring.GetPoints()]
    return points


@functools.lru_cache(maxsize=8)
def _area_geometry(aoi_wkb):
    # Built once per area: matches() runs for every result of a search (thousands). Only read afterwards.
    from osgeo import ogr

    return ogr.CreateGeometryFromWkb(aoi_wkb)


def _intersects_area(area, geojson_geometry):
    import json

    from osgeo import ogr

    footprint = ogr.CreateGeometryFromJson(json.dumps(geojson_geometry))
    if footprint is None:
        return True
    if area.Intersects(footprint):
        return True
    # The area may run past ±180 while footprints stay inside: compare shifted copies too.
    return any(geom.shifted(area, shift).Intersects(footprint) for shift in (-360.0, 360.0))
