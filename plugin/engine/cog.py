"""Cloud-Optimised GeoTIFFs from complete staging rasters (GDAL's COG driver): one way for every algorithm that
publishes COGs. DEFLATE level 1 with the predictor GDAL picks for the type (floating point or horizontal),
512-pixel tiles, overviews made by averaging (nearest for classes, counts, dates and flags)."""

import os

from . import gdalmode
from .errors import S2Error

OPTIONS = ["COMPRESS=DEFLATE", "LEVEL=1", "PREDICTOR=YES", "BLOCKSIZE=512", "OVERVIEWS=AUTO", "NUM_THREADS=ALL_CPUS",
           "BIGTIFF=IF_SAFER"]


@gdalmode.return_codes()
def translate(source, target, categorical=False):
    """Write the COG ``target`` from the raster file ``source``; S2Error with GDAL's reason when it cannot."""
    from osgeo import gdal

    options = OPTIONS + ["RESAMPLING=" + ("NEAREST" if categorical else "AVERAGE")]
    dataset = gdal.Open(source)
    if dataset is None:
        raise S2Error(f"Cannot read {os.path.basename(source)}: {gdal.GetLastErrorMsg()}")
    made = gdal.Translate(target, dataset, format="COG", creationOptions=options)
    if made is None:
        raise S2Error(f"Cannot write {os.path.basename(target)}: {gdal.GetLastErrorMsg()}")
    made = None
    dataset = None
    return target
