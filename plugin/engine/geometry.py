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
