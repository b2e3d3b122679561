"""Small OGR geometry helpers shared by the engine (GDAL ships with QGIS; no other geometry library)."""


def polygon(points):
    from osgeo import ogr

    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in points:
        ring.AddPoint_2D(float(x), float(y))
    ring.CloseRings()
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(ring)
    return polygon


def polygon_from_arrays(xs, ys):
    """A polygon from coordinate arrays (one ring, closed here if needed), built through WKB: much faster
    than adding points one by one."""
    import struct

    import numpy as np
    from osgeo import ogr

    ring = np.column_stack([np.asarray(xs, dtype="<f8"), np.asarray(ys, dtype="<f8")])
    if len(ring) and not np.array_equal(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])
    wkb = struct.pack("<BIII", 1, 3, 1, len(ring)) + ring.tobytes()
    return ogr.CreateGeometryFromWkb(wkb)


def parts(geometry):
    count = geometry.GetGeometryCount()
    if geometry.GetGeometryName().startswith(("MULTI", "GEOMETRYCOLLECTION")):
        return [geometry.GetGeometryRef(i) for i in range(count)]
    return [geometry]


def map_geometry(geometry, transform):
    """A copy of an OGR geometry with every vertex passed through ``transform(xs, ys) -> (xs, ys)``."""
    import numpy as np

    result = geometry.Clone()

    def visit(g):
        if g.GetGeometryCount():
            for i in range(g.GetGeometryCount()):
                visit(g.GetGeometryRef(i))
            return
        n = g.GetPointCount()
        if not n:
            return
        points = np.array(g.GetPoints(), dtype=float)[:, :2]
        xs, ys = transform(points[:, 0], points[:, 1])
        for i, (x, y) in enumerate(zip(np.atleast_1d(xs).tolist(), np.atleast_1d(ys).tolist())):
            g.SetPoint_2D(i, x, y)

    visit(result)
    return result


def shifted(geometry, dlon):
    """A copy of ``geometry`` moved by ``dlon`` degrees of longitude."""
    return map_geometry(geometry, lambda xs, ys: (xs + dlon, ys))


def unwrap_longitudes(geometry):
    """A copy whose rings have continuous longitudes (no edge spans more than 180°; values may pass ±180).
    For areas reprojected from a projected CRS, where a jump from +180 to -180 is a crossing of the
    antimeridian, not an edge round the globe as RFC 7946 reads lon/lat input."""
    import numpy as np

    def unwrap(xs, ys):
        steps = np.diff(xs)
        if not len(steps) or np.abs(steps).max() <= 180.0:
            return xs, ys
        return np.concatenate([[xs[0]], xs[0] + np.cumsum(steps - 360.0 * np.round(steps / 360.0))]), ys

    return map_geometry(geometry, unwrap)
