"""sentinel2:biophysical: LAI, FAPAR, FCOVER, CCC and CWC from Level-2A products with the S2 Toolbox networks.

Per product (:mod:`.l2a` reads Sen2Cor, MAJA and STAC layouts) and per variable, one Cloud-Optimised GeoTIFF
``<product>_<VARIABLE>_<res>m.tif`` (float32, NaN = no data) and one quality band ``<product>_QUALITY_<res>m.tif``
(uint16 bit flags, :data:`QUALITY_BITS`). Pixels that are no data, saturated, cloud, cirrus, cloud shadow, snow
or water (SCL or MAJA masks), and pixels whose reflectances are outside a network's definition domain, are
no data in the variables (as SNAP does for the domain). Outputs beyond a network's range plus tolerance are kept
and flagged per variable; those within the tolerance are clipped and flagged.

The product is processed in strips of rows (memory does not depend on the scene's size): each strip reads the
bands on the target grid, interpolates the angle grids to its pixels, runs the networks on its unmasked pixels
only, and is written in order. Strips run on a few threads (numpy and GDAL release the GIL); products run
``PARALLEL`` at a time. Files are written to hidden temporary names, made COGs, then renamed (or uploaded, for
``s3://`` outputs: :mod:`.storage`). A product whose outputs are all there for the same area is skipped.
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import os
import threading

import numpy as np

from . import cog, gdalcache, gdalmode, l2a, networks
from .callbacks import check_cancelled, never_cancelled, no_progress
from .errors import Cancelled, ParameterError, S2Error
from .files import product_stem

OUT_OF_DOMAIN, CLIPPED = 128, 256
RANGE_BITS = {name: 512 << index for index, name in enumerate(networks.VARIABLES)}  # LAI 512 ... CWC 8192
QUALITY_BITS = {1: "no data", 2: "saturated or defective", 4: "cloud", 8: "cirrus", 16: "cloud shadow",
                32: "snow or ice", 64: "water", 128: "input outside the definition domain",
                256: "an output clipped to its range (within tolerance)",
                **{bit: f"{name} beyond its range" for name, bit in RANGE_BITS.items()}}
PIXELS_PER_STRIP = 1 << 18  # about 60 MB of inputs, intermediates and results per strip in flight
# Staging files in strips of rows: each block is complete as soon as its rows are written, so none waits in the
# cache for rows of later strips.
STAGING_OPTIONS = ["BIGTIFF=IF_SAFER"]
SOURCE_BLOCK_ROWS = 1024  # Sen2Cor's JPEG 2000 tiles: a row of them, for every band, stays decoded in the cache
AREA_KEY = "BIOPHYSICAL_AREA"
MEMORY_PER_PRODUCT = 700 * 1024 * 1024


class OutsideArea(S2Error):
    """The AOI does not meet this product: nothing to compute, and not a failure (a folder may hold several
    tiles)."""


@dataclasses.dataclass
class Plan:
    input_folder: str
    output: object  # storage.LocalOutput or storage.S3Output
    variables: list
    resolution: int
    area_wkt: object = None  # WKT text or WKB bytes, EPSG:4326
    parallel: int = 1
    area_file: str = None  # the AOI as a file, for SLURM tasks
    todo: list = dataclasses.field(default_factory=list)  # product paths
    skipped: dict = dataclasses.field(default_factory=dict)  # name -> output locations
    notes: list = dataclasses.field(default_factory=list)

    def describe(self):
        return (f"{len(self.todo) + len(self.skipped)} Level-2A product(s): {len(self.todo)} to process, "
                f"{len(self.skipped)} already done; {', '.join(self.variables)} at {self.resolution} m, "
                f"{self.parallel} at a time, into {self.output.describe()}")


@dataclasses.dataclass
class BatchResult:
    products: list = dataclasses.field(default_factory=list)  # product names made or found
    outputs: dict = dataclasses.field(default_factory=dict)  # name -> [locations]
    failed: dict = dataclasses.field(default_factory=dict)  # name -> sentence
    outside: list = dataclasses.field(default_factory=list)  # names of products the AOI does not meet


def output_names(name, variables, resolution):
    return [f"{name}_{v}_{resolution}m.tif" for v in variables] + [f"{name}_QUALITY_{resolution}m.tif"]


def area_digest(area):
    if not area:
        return "whole"
    return hashlib.sha1(area if isinstance(area, bytes) else area.encode()).hexdigest()[:16]


@gdalmode.return_codes()
def plan(input_folder, output, variables, resolution, area_wkt=None, pattern=None, parallel=0):
    """Validate the parameters and find the products; nothing is written."""
    if not input_folder or not os.path.isdir(input_folder):
        raise ParameterError("INPUT_FOLDER", f"the folder {input_folder or '(empty)'} does not exist.")
    if resolution not in networks.RESOLUTIONS:
        raise ParameterError("RESOLUTION", "choose 20 (8 bands) or 10 (3 bands).")
    variables = list(dict.fromkeys(variables))
    networks.check_variables(variables, resolution)
    products = l2a.find(input_folder, pattern)
    if not products:
        raise ParameterError("INPUT_FOLDER", f"no Level-2A product (Sen2Cor .SAFE, MAJA folder or STAC bands) "
                                             f"in {input_folder}.")
    output.prepare()
    work = Plan(input_folder, output, variables, resolution, area_wkt, _parallel(parallel, len(products)))
    digest = area_digest(area_wkt)
    for path in products:
        name = product_stem(path)
        names = output_names(name, variables, resolution)
        if all(output.has(n, {AREA_KEY: digest}) for n in names):
            work.skipped[name] = [output.location(n) for n in names]
        else:
            work.todo.append(path)
    return work


def _parallel(parallel, count):
    if parallel and parallel > 0:
        return min(parallel, count)
    cpus = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = MEMORY_PER_PRODUCT * cpus
    return max(1, min(cpus, count, memory // MEMORY_PER_PRODUCT))


def execute(work, progress=None, is_cancelled=None, log=None):
    """Process ``work.todo``; a failed product does not stop the others. Returns a :class:`BatchResult`."""
    progress, is_cancelled = progress or no_progress, is_cancelled or never_cancelled
    log = log or (lambda message: None)
    result = BatchResult(products=list(work.skipped), outputs=dict(work.skipped))
    threads = max(1, (os.cpu_count() or 1) // work.parallel)
    done = collections.defaultdict(float)
    lock = threading.Lock()

    def report(path):
        def step(fraction, message=""):
            with lock:
                done[path] = fraction
                total = sum(done.values()) / max(len(work.todo), 1)
            progress(total, message)
        return step

    def one(path):
        return process_product(path, work.output, work.variables, work.resolution, work.area_wkt,
                               report(path), is_cancelled, log, threads)

    with concurrent.futures.ThreadPoolExecutor(work.parallel, thread_name_prefix="biophysical") as pool:
        futures = {pool.submit(one, path): path for path in work.todo}
        for future in concurrent.futures.as_completed(futures):
            name = product_stem(futures[future])
            try:
                result.outputs[name] = future.result()
                result.products.append(name)
                log(f"{name}: {', '.join(work.variables)} written")
            except Cancelled:
                continue
            except OutsideArea:
                result.outside.append(name)
                log(f"{name}: left out, the AOI does not meet it")
            except S2Error as error:
                result.failed[name] = str(error).removeprefix(f"{name}: ")
                log(f"{name}: failed, {result.failed[name]}")
    if is_cancelled():
        raise Cancelled()
    result.products.sort()
    return result


@gdalmode.return_codes()
def process_product(path, output, variables, resolution, area_wkt=None, progress=None, is_cancelled=None,
                    log=None, threads=1):
    """Compute ``variables`` for one product and publish its files; returns their locations."""
    progress, is_cancelled = progress or no_progress, is_cancelled or never_cancelled
    product = l2a.open_product(path)
    folder, note = networks.folder_for(product.platform, resolution)
    if note and log:
        log(f"{product.name}: {note}")
    nets = [networks.load(v, folder, resolution) for v in variables]
    grid = l2a.product_grid(product, resolution, area_wkt)
    if grid is None:
        raise OutsideArea(f"{product.name}: the AOI does not overlap the product.")
    angle_grids = l2a.read_angles(product, grid)
    for line in product.notes:
        if log:
            log(line)
    names = output_names(product.name, variables, resolution)
    staging = output.staging_folder()
    temps = [os.path.join(staging, f".{n}.part") for n in names]
    metadata = {AREA_KEY: area_digest(area_wkt), "PRODUCT": product.name, "NETWORKS": f"S2 Toolbox 3.0 {folder}"}
    # a row of decoded source tiles of every band stays in the cache; nothing else needs to
    cache = 2 * len(networks.BANDS[resolution]) * grid.width * SOURCE_BLOCK_ROWS * 2
    try:
        with gdalcache.bounded(max(64 << 20, cache)):
            _compute(product, grid, angle_grids, nets, temps, progress, is_cancelled, threads, metadata)
            for temp, name in zip(temps, names):  # one at a time: two side by side cost 170 MB more (make bench)
                check_cancelled(is_cancelled)
                cog.translate(temp, os.path.join(staging, f".{name}.cog"), categorical="_QUALITY_" in name)
        return _publish(output, staging, names, is_cancelled)
    finally:
        for temp in temps:
            for leftover in (temp, temp.replace(".part", ".cog")):
                if os.path.exists(leftover):
                    os.remove(leftover)


def _publish(output, staging, names, is_cancelled):
    """Publish a product's files, the quality band last: it counts as done only when all are there; a failure
    takes back what was published."""
    published = []
    try:
        for name in names:
            check_cancelled(is_cancelled)
            published.append(output.publish(os.path.join(staging, f".{name}.cog"), name))
    except S2Error:
        for name in names[:len(published)]:
            output.withdraw(name)
        raise
    return published


def _compute(product, grid, angle_grids, nets, temps, progress, is_cancelled, threads, metadata):
    from osgeo import gdal

    bands = networks.BANDS[int(grid.resolution)]
    rows_per_strip = max(16, min(512, PIXELS_PER_STRIP // max(grid.width, 1)) // 16 * 16)
    strips = [(row, min(rows_per_strip, grid.height - row)) for row in range(0, grid.height, rows_per_strip)]
    options = STAGING_OPTIONS + [f"BLOCKYSIZE={rows_per_strip}"]  # one block per strip and file
    outputs = [_create(temp, grid, gdal.GDT_Float32, net.variable, metadata, options)
               for temp, net in zip(temps, nets)]
    quality = _create(temps[-1], grid, gdal.GDT_UInt16, "QUALITY", metadata, options)
    local = threading.local()

    def strip(row, rows):
        if is_cancelled():
            raise Cancelled()
        if not hasattr(local, "reader"):
            local.reader = l2a.Reader(product, grid)
        with gdalmode.return_codes():  # a worker thread: its own exception state
            return compute_strip(local.reader, bands, angle_grids, nets, row, rows)

    try:
        with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="strips") as pool:
            pending = collections.deque()
            for job in strips:
                pending.append((job, pool.submit(strip, *job)))
                if len(pending) > threads:
                    _write(outputs, quality, *pending.popleft())
                    progress(pending[0][0][0] / grid.height, product.name)
            while pending:
                _write(outputs, quality, *pending.popleft())
        for dataset in outputs + [quality]:
            dataset.FlushCache()
            if gdal.GetLastErrorType() >= gdal.CE_Failure and gdal.GetLastErrorMsg():
                raise S2Error(f"{product.name}: cannot write the outputs ({gdal.GetLastErrorMsg()}).")
    finally:
        outputs.clear()
        quality = None
    progress(1.0, product.name)


def _write(outputs, quality, job, future):
    row, _rows = job
    values, bits = future.result()
    for dataset, array in zip(outputs, values):
        dataset.GetRasterBand(1).WriteArray(array, 0, row)
    quality.GetRasterBand(1).WriteArray(bits, 0, row)


def compute_strip(reader, bands, angle_grids, nets, row, rows):
    """(values per network, quality bits) for rows ``row`` .. +``rows`` of the reader's grid."""
    width = reader.grid.width
    bits = reader.quality(row, rows).reshape(-1)
    count = len(bands)
    inputs = np.empty((count + 3, rows * width), np.float32)
    for index, band in enumerate(bands):
        inputs[index] = reader.reflectance(band, row, rows).reshape(-1)
    bits[np.isnan(inputs[:count]).any(axis=0)] |= l2a.NO_DATA
    valid = np.flatnonzero((bits & l2a.MASKED) == 0)
    xs, ys = reader.grid.centres(0, row, width, rows)
    sun_zenith, sun_azimuth, view_zenith, view_azimuth = angle_grids.at(xs, ys)
    cosines = (np.cos(np.radians(view_zenith)), np.cos(np.radians(sun_zenith)),
               np.cos(np.radians(sun_azimuth - view_azimuth)))
    for index, cosine in enumerate(cosines):
        inputs[count + index] = cosine.reshape(-1)
    chosen = inputs[:, valid]
    outside = {}
    values = []
    clipped_any = np.zeros(len(valid), bool)
    for net in nets:
        if id(net.domain) not in outside:
            outside[id(net.domain)] = net.domain.outside(chosen[:count])
        out = outside[id(net.domain)]
        result, clipped, beyond = net.run(chosen)
        result[out] = np.nan
        full = np.full(rows * width, np.nan, np.float32)
        full[valid] = result
        values.append(full.reshape(rows, width))
        clipped_any |= clipped & ~out
        bits[valid[beyond & ~out]] |= RANGE_BITS[net.variable]
    for out in outside.values():
        bits[valid[out]] |= OUT_OF_DOMAIN
    bits[valid[clipped_any]] |= CLIPPED
    return values, bits.reshape(rows, width)


def _create(path, grid, kind, variable, metadata, options):
    from osgeo import gdal

    dataset = gdal.GetDriverByName("GTiff").Create(path, grid.width, grid.height, 1, kind, options)
    if dataset is None:
        raise S2Error(f"Cannot create {path}: {gdal.GetLastErrorMsg()}")
    dataset.SetGeoTransform(grid.transform)
    dataset.SetProjection(grid.projection)
    band = dataset.GetRasterBand(1)
    if variable == "QUALITY":
        band.SetDescription("QUALITY: quality flags (bits)")
        band.SetMetadata({f"BIT_{bit.bit_length() - 1}": text for bit, text in QUALITY_BITS.items()})
        band.Fill(l2a.NO_DATA)
    else:
        _, description, unit = networks.VARIABLES[variable]
        band.SetDescription(f"{variable}: {description} ({unit})")
        band.SetUnitType(unit)
        band.SetNoDataValue(float("nan"))
        band.SetScale(1.0)
        band.SetOffset(0.0)
        band.SetMetadata({"VARIABLE": variable, "UNITS": unit, "SCALE": "1"})
    dataset.SetMetadata(dict(metadata, VARIABLE=variable))
    return dataset
