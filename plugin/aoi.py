"""Reading the AOI parameter: features of a vector layer dissolved into one geometry in EPSG:4326."""

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProcessingFeatureSource,
)

from .engine.errors import ParameterError

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")


def read_aoi(algorithm, parameters, name, context, feedback):
    """The AOI as WKB in EPSG:4326: selected features when the layer has a selection, otherwise all of them,
    repaired when invalid (and said so), dissolved. Lon/lat input is passed as it is (RFC 7946: an area across
    the antimeridian comes split at 180°); an area reprojected from a projected CRS that crosses 180° gets
    continuous longitudes (past ±180), since its short straight edges cannot go round the globe."""
    source = algorithm.parameterAsSource(parameters, name, context)
    if source is None:
        raise ParameterError(name, "no vector layer was given.")
    geometries = [f.geometry() for f in _features(algorithm, parameters, name, context, source)]
    geometries = [g for g in geometries if g is not None and not g.isNull() and not g.isEmpty()]
    if not geometries:
        raise ParameterError(name, "the layer has no features with a geometry.")
    repaired = 0
    for index, geometry in enumerate(geometries):
        if not geometry.isGeosValid():
            geometries[index] = geometry.makeValid()
            repaired += 1
    if repaired:
        feedback.pushInfo(f"{name}: repaired {repaired} invalid geometr{'y' if repaired == 1 else 'ies'}.")
    dissolved = QgsGeometry.unaryUnion(geometries)
    if dissolved is None or dissolved.isNull() or dissolved.isEmpty():
        raise ParameterError(name, "the features dissolve into an empty geometry.")
    crs = source.sourceCrs()
    if not crs.isValid():
        raise ParameterError(name, "the layer has no valid coordinate reference system.")
    if crs != WGS84:
        if not crs.isGeographic():
            # Densify in the layer's CRS so long straight edges keep their shape in lon/lat.
            dissolved = dissolved.densifyByDistance(_densify_step(dissolved))
        dissolved.transform(QgsCoordinateTransform(crs, WGS84, context.transformContext()))
        if not crs.isGeographic():
            return _continuous_longitudes(bytes(dissolved.asWkb()))
    return bytes(dissolved.asWkb())


def _continuous_longitudes(wkb):
    from osgeo import ogr

    from .engine.geometry import unwrap_longitudes

    return bytes(unwrap_longitudes(ogr.CreateGeometryFromWkb(wkb)).ExportToWkb())


def _features(algorithm, parameters, name, context, source):
    # Read through the source (a thread-safe copy of the layer), never the project layer itself, since
    # algorithms run in a worker thread; only the selected ids come from the layer.
    request = QgsFeatureRequest().setNoAttributes()
    layer = algorithm.parameterAsVectorLayer(parameters, name, context)
    selected = layer.selectedFeatureIds() if layer is not None else []
    if selected:
        request.setFilterFids(selected)
    # We repair invalid geometries ourselves, so Processing must not reject them first.
    return source.getFeatures(request, QgsProcessingFeatureSource.Flag.FlagSkipGeometryValidityChecks)


def _densify_step(geometry):
    box = geometry.boundingBox()
    return max(box.width(), box.height()) / 200.0 or 1.0
