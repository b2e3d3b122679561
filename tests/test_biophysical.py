"""The biophysical engine: networks against an independent per-pixel evaluation of the S2 Toolbox weights (as the
ATBD and SNAP's BiophysicalAlgo define it), angles from real metadata, the three L2A layouts, quality flags,
COG outputs, AOI windows, skips, cancel, and outputs in a real S3-compatible server (moto) behind a faulty gate."""

import csv
import dataclasses
import functools
import math
import os
import random
import xml.etree.ElementTree as ET

import l2adata
import numpy as np
import pytest
from osgeo import gdal
from servers import http_server  # noqa: F401, E402  (fixture)

from sentinel2_pipeline.plugin.engine import angles, biophysical, l2a, networks, storage
from sentinel2_pipeline.plugin.engine.errors import Cancelled, ParameterError, S2Error
from sentinel2_pipeline.plugin.engine.files import product_stem

ALL = list(networks.VARIABLES)
FOLDERS = {"S2A": 20, "S2B": 20, "S2A_10m": 10}


# ---- an independent evaluation, straight from the shared tables ---------------------------------------------

@functools.cache
def table(folder, name, part):
    with open(os.path.join(l2adata.NETWORKS, folder, name, f"{name}_{part}")) as handle:
        return [[float(v) for v in row] for row in csv.reader(handle) if row]


@functools.cache
def domain_cells(folder, name):
    return {tuple(int(v) for v in row) for row in table(folder, name, "DefinitionDomain_Grid")}


def inside(folder, variable, values):
    """SNAP's definition domain: every band within min/max, and the bands' cell one of the grid's rows."""
    name = networks.VARIABLES[variable][0]
    minmax = table(folder, name, "DefinitionDomain_MinMax")
    grid = domain_cells(folder, name)
    bands = values[:len(minmax[0])]
    if any(b < lo or b > hi for b, lo, hi in zip(bands, minmax[0], minmax[1])):
        return False
    return tuple(int(math.floor(10 * (b - lo) / (hi - lo) + 1)) for b, lo, hi in zip(bands, *minmax)) in grid


def in_domain_pixels(folder, variable, count, rng):
    """Inputs drawn inside random cells of the domain grid (angles anywhere in their normalisation range)."""
    name = networks.VARIABLES[variable][0]
    low, high = table(folder, name, "DefinitionDomain_MinMax")
    norm = table(folder, name, "Normalisation")
    rows = table(folder, name, "DefinitionDomain_Grid")
    pixels = []
    for _ in range(count):
        cell = rng.choice(rows)
        bands = [lo + (c - 1 + rng.uniform(0.05, 0.95)) * (hi - lo) / 10 for c, lo, hi in zip(cell, low, high)]
        pixels.append(bands + [rng.uniform(lo, hi) for lo, hi in norm[len(bands):]])
    return pixels


def reference(folder, variable, values):
    """One pixel, SNAP's way: normalise, tanh layer, linear output, denormalise, extreme cases; None when the
    input is outside the definition domain."""
    if not inside(folder, variable, values):
        return None
    name = networks.VARIABLES[variable][0]
    norm = table(folder, name, "Normalisation")
    x = [2 * (v - lo) / (hi - lo) - 1 for v, (lo, hi) in zip(values, norm)]
    w1, b1 = table(folder, name, "Weights_Layer1_Neurons"), table(folder, name, "Weights_Layer1_Bias")[0]
    w2, b2 = table(folder, name, "Weights_Layer2_Neurons")[0], table(folder, name, "Weights_Layer2_Bias")[0][0]
    hidden = [math.tanh(sum(w * v for w, v in zip(row, x)) + b) for row, b in zip(w1, b1)]
    y = sum(w * h for w, h in zip(w2, hidden)) + b2
    low, high = table(folder, name, "Denormalisation")[0]
    out = 0.5 * (y + 1) * (high - low) + low
    tolerance, vmin, vmax = table(folder, name, "ExtremeCases")[0]
    if vmin - tolerance < out < vmin:
        return vmin
    if vmax < out < vmax + tolerance:
        return vmax
    return out


def tile_angles_at(x, y):
    """Sun and mean view angles at (x, y) from MTD_TL.xml, by hand: nanmean over every band and detector grid,
    bilinear between the four nodes around the point."""
    root = ET.parse(l2adata.MTD_TL).getroot()

    def grid(element, part):
        return [[float(v) for v in row.text.split()] for row in element.find(part).find("Values_List")]

    sun = next(e for e in root.iter() if e.tag.endswith("Sun_Angles_Grid"))
    views = [e for e in root.iter() if e.tag.endswith("Viewing_Incidence_Angles_Grids")]
    fx, fy = (x - l2adata.TILE_ULX) / 5000, (l2adata.TILE_ULY - y) / 5000
    i, j = int(fy), int(fx)
    wy, wx = fy - i, fx - j

    def interpolate(nodes):
        return ((1 - wy) * ((1 - wx) * nodes(i, j) + wx * nodes(i, j + 1))
                + wy * ((1 - wx) * nodes(i + 1, j) + wx * nodes(i + 1, j + 1)))

    def mean_of(part):
        grids = [grid(v, part) for v in views]
        return lambda r, c: float(np.nanmean([g[r][c] for g in grids]))

    sz, sa = grid(sun, "Zenith"), grid(sun, "Azimuth")
    return (interpolate(lambda r, c: sz[r][c]), interpolate(lambda r, c: sa[r][c]),
            interpolate(mean_of("Zenith")), interpolate(mean_of("Azimuth")))


def read(path):
    dataset = gdal.Open(path)
    return dataset.GetRasterBand(1).ReadAsArray(), dataset


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("l2a")
    return {"sen2cor": l2adata.sen2cor_product(str(folder)), "old": l2adata.sen2cor_product(str(folder), "02.07"),
            "maja": l2adata.maja_product(str(folder)), "stac": l2adata.stac_product(str(folder)),
            "folder": str(folder)}


def run(input_folder, out, variables=ALL, resolution=20, area=None, pattern=None, **kwargs):
    work = biophysical.plan(input_folder, storage.output_for(str(out)), variables, resolution, area, pattern)
    return work, biophysical.execute(work, **kwargs)


# ---- networks -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("folder", FOLDERS)
def test_every_network_matches_the_per_pixel_evaluation_of_its_weights(folder):
    resolution = FOLDERS[folder]
    rng = random.Random(7)
    for variable in ALL:
        if not os.path.isdir(os.path.join(l2adata.NETWORKS, folder, networks.VARIABLES[variable][0])):
            continue
        net = networks.load(variable, folder, resolution)
        norm = table(folder, networks.VARIABLES[variable][0], "Normalisation")
        pixels = [[rng.uniform(lo, hi) for lo, hi in norm] for _ in range(100)]  # mostly outside the domain
        pixels += in_domain_pixels(folder, variable, 200, rng)
        values, clipped, beyond = net.run(np.array(pixels, np.float32).T)
        outside = net.domain.outside(np.array(pixels, np.float32).T[:len(networks.BANDS[resolution])])
        checked = 0
        for pixel, value, out in zip(pixels, values, outside):
            expected = reference(folder, variable, pixel)
            assert out == (expected is None), (variable, pixel)
            if expected is not None:
                assert value == pytest.approx(expected, abs=1e-3 * max(1.0, abs(expected))), (variable, pixel)
                checked += 1
        assert checked >= 200, f"{variable}: too few random inputs inside the domain to compare"


def test_outputs_just_beyond_the_range_are_clipped_and_far_beyond_are_flagged_and_kept():
    net = networks.load("LAI", "S2B", 20)
    inputs = np.array([[0.05, 0.04, 0.08, 0.25, 0.32, 0.35, 0.18, 0.09, 0.996, 0.82, -0.2]], np.float32).T
    value = net.run(inputs)[0][0]
    near = dataclasses.replace(net, bias2=net.bias2 + (net.high - value) + net.tolerance / 2)
    far = dataclasses.replace(net, bias2=net.bias2 + (net.high - value) + 3 * net.tolerance)
    clipped_value, clipped, beyond = near.run(inputs)
    assert clipped_value[0] == net.high and clipped[0] and not beyond[0]
    far_value, clipped, beyond = far.run(inputs)
    assert far_value[0] == pytest.approx(net.high + 3 * net.tolerance, abs=1e-4) and beyond[0] and not clipped[0]


def test_variables_without_a_10_m_network_are_refused_naming_the_parameter(scenes, tmp_path):
    with pytest.raises(ParameterError, match=r"^VARIABLES: CCC and CWC have no 10 m network"):
        run(scenes["folder"], tmp_path, ["LAI", "CCC", "CWC"], 10)
    with pytest.raises(ParameterError, match="^RESOLUTION:"):
        run(scenes["folder"], tmp_path, ["LAI"], 60)
    with pytest.raises(ParameterError, match="^INPUT_FOLDER: no Level-2A product"):
        run(str(tmp_path), tmp_path / "out", ["LAI"])
    assert not os.path.exists(tmp_path / "out")


def test_s2c_uses_the_s2b_networks_and_says_so():
    assert networks.folder_for("S2C", 20) == ("S2B", "S2C uses the toolbox's S2B networks (the toolbox has none of "
                                                     "its own)")
    assert networks.folder_for("S2B", 10)[0] == "S2A_10m" and networks.folder_for("S2A", 20) == ("S2A", None)


# ---- angles -------------------------------------------------------------------------------------------------

def test_angles_at_pixels_follow_the_grids_of_the_real_tile_metadata():
    grids = angles.read(l2adata.MTD_TL)
    assert grids.sun_zenith.shape == (23, 23) and not grids.per_scene
    for x, y in ((l2adata.TILE_ULX + 12345.0, l2adata.TILE_ULY - 67890.0), (l2adata.TILE_ULX + 5000.0 * 7,
                                                                            l2adata.TILE_ULY - 5000.0 * 3)):
        ours = [a[0, 0] for a in grids.at([x], [y])]
        assert ours == pytest.approx(tile_angles_at(x, y), abs=2e-3)
    sun_zenith = grids.at(np.linspace(300010, 409790, 50), [8600010.0])[0]
    assert np.ptp(sun_zenith) > 0.5  # the sun's zenith changes across the tile: not one value per scene


def test_azimuths_are_interpolated_as_directions_across_north():
    grid = np.array([[359.0, 1.0], [359.0, 1.0]])
    flat = np.full((2, 2), 30.0)
    grids = angles.AngleGrids(flat, grid, flat, grid, 0.0, 10.0, 10.0, 10.0)
    sun_azimuth = grids.at([5.0], [5.0])[1][0, 0]
    assert min(sun_azimuth, 360 - sun_azimuth) < 1e-3


def test_maja_metadata_gives_the_same_angles_as_the_tile_metadata(scenes):
    product = l2a.open_product(scenes["maja"])
    ours, theirs = angles.read(product.angle_file), angles.read(l2adata.MTD_TL)
    for a, b in zip((ours.sun_zenith, ours.view_zenith, ours.view_azimuth), (theirs.sun_zenith, theirs.view_zenith,
                                                                             theirs.view_azimuth)):
        np.testing.assert_allclose(a, b, atol=1e-9)


# ---- products -----------------------------------------------------------------------------------------------

def test_reflectance_applies_the_offset_of_baseline_04_and_later_only(scenes):
    for key in ("sen2cor", "old", "maja", "stac"):
        product = l2a.open_product(scenes[key])
        grid = l2a.product_grid(product, 20)
        reader = l2a.Reader(product, grid)
        np.testing.assert_allclose(reader.reflectance("B05", 0, grid.height), l2adata.reflectance("B05"), atol=1e-4,
                                   err_msg=key)
        np.testing.assert_allclose(reader.reflectance("B03", 0, grid.height), l2adata.reflectance("B03"), atol=1e-4,
                                   err_msg=key)
    assert l2a.open_product(scenes["sen2cor"]).scaling["B05"] == (-1000.0, 10000.0)
    assert l2a.open_product(scenes["old"]).scaling["B05"] == (0.0, 10000.0)
    assert l2a.open_product(scenes["sen2cor"]).platform == "S2B" and l2a.open_product(scenes["old"]).platform == "S2A"


def test_sen2cor_product_values_match_the_per_pixel_evaluation(scenes, tmp_path):
    work, result = run(scenes["folder"], tmp_path, ["LAI", "CCC"], pattern="*N0509*")
    name = os.path.basename(scenes["sen2cor"])[:-5]
    assert result.failed == {} and result.products == [name]
    lai, dataset = read(str(tmp_path / f"{name}_LAI_20m.tif"))
    ccc, _ = read(str(tmp_path / f"{name}_CCC_20m.tif"))
    quality, _ = read(str(tmp_path / f"{name}_QUALITY_20m.tif"))
    x0, res, _, y0, _, _ = dataset.GetGeoTransform()
    bands = [np.round(l2adata.reflectance(b) * 10000) / 10000 for b in networks.BANDS[20]]  # as the DN hold them
    compared = 0
    for row in range(0, l2adata.HEIGHT, 5):
        for col in range(1, l2adata.WIDTH, 3):
            if quality[row, col] & l2a.MASKED:
                assert np.isnan(lai[row, col])
                continue
            sz, sa, vz, va = tile_angles_at(x0 + (col + 0.5) * res, y0 - (row + 0.5) * res)
            pixel = [b[row, col] for b in bands] + [math.cos(math.radians(vz)), math.cos(math.radians(sz)),
                                                    math.cos(math.radians(sa - va))]
            for array, variable in ((lai, "LAI"), (ccc, "CCC")):
                expected = reference("S2B", variable, pixel)
                if expected is None:
                    assert np.isnan(array[row, col]) and quality[row, col] & biophysical.OUT_OF_DOMAIN
                else:
                    assert array[row, col] == pytest.approx(expected, abs=1e-3 * max(1.0, abs(expected)))
                    compared += 1
    assert compared > 100


def test_scene_classes_become_quality_bits_and_no_data(scenes, tmp_path):
    run(scenes["folder"], tmp_path, ["LAI"], pattern="*N0509*")
    name = os.path.basename(scenes["sen2cor"])[:-5]
    lai, _ = read(str(tmp_path / f"{name}_LAI_20m.tif"))
    quality, _ = read(str(tmp_path / f"{name}_QUALITY_20m.tif"))
    expected_bits = {"cloud": l2a.CLOUD, "shadow": l2a.SHADOW, "water": l2a.WATER, "snow": l2a.SNOW,
                     "cirrus": l2a.CIRRUS, "saturated": l2a.SATURATED, "nodata": l2a.NO_DATA,
                     "bright": biophysical.OUT_OF_DOMAIN}
    for patch, bit in expected_bits.items():
        (rows, cols), _ = l2adata.PATCHES[patch]
        assert (quality[rows, cols] & bit).all(), patch
        assert np.isnan(lai[rows, cols]).all(), patch
    clear = (quality & (l2a.MASKED | biophysical.OUT_OF_DOMAIN)) == 0
    assert clear.sum() > 0.5 * clear.size and np.isfinite(lai[clear]).all()
    assert (lai[clear] > 0).all() and (lai[clear] <= 8).all()


def test_maja_stac_and_sen2cor_layouts_of_one_scene_give_the_same_layers(scenes, tmp_path):
    _, result = run(scenes["folder"], tmp_path, ["LAI", "FCOVER"])
    assert result.failed == {} and len(result.products) == 4
    names = {key: product_stem(scenes[key]) for key in ("sen2cor", "maja", "stac")}
    layers = {key: [read(str(tmp_path / f"{name}_{v}_20m.tif"))[0] for v in ("LAI", "FCOVER", "QUALITY")]
              for key, name in names.items()}
    for key in ("maja", "stac"):
        for ours, theirs in zip(layers[key], layers["sen2cor"]):
            np.testing.assert_allclose(ours, theirs, atol=1e-4, err_msg=key)


def test_outputs_are_cogs_that_say_what_they_hold(scenes, tmp_path):
    _, result = run(scenes["folder"], tmp_path, ["CCC"], pattern="*N0509*")
    path = result.outputs[result.products[0]][0]
    assert os.path.basename(path).endswith("_CCC_20m.tif")
    dataset = gdal.Open(path)
    assert dataset.GetMetadata("IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    band = dataset.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Float32 and math.isnan(band.GetNoDataValue())
    assert band.GetDescription() == "CCC: canopy chlorophyll content (ug/cm2)" and band.GetUnitType() == "ug/cm2"
    assert band.GetMetadata()["VARIABLE"] == "CCC" and dataset.GetMetadata()["NETWORKS"] == "S2 Toolbox 3.0 S2B"
    flags = gdal.Open(result.outputs[result.products[0]][-1])
    quality = flags.GetRasterBand(1)
    assert quality.DataType == gdal.GDT_UInt16 and quality.GetMetadata()["BIT_2"] == "cloud"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_ten_metre_variables_from_three_bands(scenes, tmp_path):
    _, result = run(scenes["folder"], tmp_path, ["LAI", "FAPAR"], 10, pattern="*N0509*")
    lai, dataset = read(result.outputs[result.products[0]][0])
    assert lai.shape == (2 * l2adata.HEIGHT, 2 * l2adata.WIDTH) and dataset.GetGeoTransform()[1] == 10
    quality, _ = read(result.outputs[result.products[0]][-1])
    (rows, cols), _ = l2adata.PATCHES["water"]  # SCL at 20 m repeated onto the 10 m grid
    assert (quality[rows.start * 2:rows.stop * 2, cols.start * 2:cols.stop * 2] & l2a.WATER).all()
    assert np.isfinite(lai).sum() > 0.4 * lai.size


def test_an_aoi_reads_only_its_window_and_a_new_area_is_computed_again(scenes, tmp_path):
    x0, y0 = l2adata.ORIGIN
    from osgeo import ogr, osr

    def area(x, y, size):
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for dx, dy in ((0, 0), (size, 0), (size, -size), (0, -size), (0, 0)):
            ring.AddPoint_2D(x + dx, y + dy)
        polygon = ogr.Geometry(ogr.wkbPolygon)
        polygon.AddGeometry(ring)
        utm, wgs = osr.SpatialReference(), osr.SpatialReference()
        utm.ImportFromEPSG(l2adata.EPSG)
        wgs.ImportFromEPSG(4326)
        wgs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        polygon.Transform(osr.CoordinateTransformation(utm, wgs))
        return polygon.ExportToWkt()

    first = area(x0 + 200, y0 - 100, 300)
    work, result = run(scenes["folder"], tmp_path, ["LAI"], area=first, pattern="*N0509*")
    lai, dataset = read(result.outputs[result.products[0]][0])
    assert 15 <= lai.shape[0] <= 18 and 15 <= lai.shape[1] <= 18
    assert dataset.GetGeoTransform()[0] <= x0 + 200 < dataset.GetGeoTransform()[0] + 20
    again, _ = run(scenes["folder"], tmp_path, ["LAI"], area=first, pattern="*N0509*")
    assert again.todo == [] and list(again.skipped) == result.products
    other, _ = run(scenes["folder"], tmp_path, ["LAI"], area=area(x0 + 100, y0 - 100, 200), pattern="*N0509*")
    assert len(other.todo) == 1
    _, away = run(scenes["folder"], tmp_path / "away", ["LAI"], area=area(x0 + 50000, y0, 100), pattern="*N0509*")
    assert away.failed == {} and away.products == [] and away.outside == [result.products[0]]
    with pytest.raises(S2Error, match="the AOI does not overlap the product"):
        biophysical.process_product(scenes["sen2cor"], storage.output_for(str(tmp_path)), ["LAI"], 20,
                                    area(x0 + 50000, y0, 100))


def test_strips_on_several_threads_give_the_same_layers_as_one_strip(scenes, tmp_path, monkeypatch):
    one = biophysical.process_product(scenes["sen2cor"], storage.output_for(str(tmp_path / "one")), ALL, 20)
    monkeypatch.setattr(biophysical, "PIXELS_PER_STRIP", 16 * l2adata.WIDTH)
    many = biophysical.process_product(scenes["sen2cor"], storage.output_for(str(tmp_path / "many")), ALL, 20,
                                       threads=3)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(read(a)[0], read(b)[0])


def test_a_broken_product_fails_alone_with_its_reason(scenes, tmp_path):
    import shutil

    folder = tmp_path / "in"
    shutil.copytree(scenes["sen2cor"], folder / os.path.basename(scenes["sen2cor"]))
    broken = shutil.copytree(scenes["stac"], folder / "S2B_23LLF_20230602_0_L2A")
    os.remove(os.path.join(broken, "granule_metadata.xml"))
    _, result = run(str(folder), tmp_path / "out", ["LAI"])
    assert list(result.failed) == ["S2B_23LLF_20230602_0_L2A"] and len(result.products) == 1
    assert result.failed["S2B_23LLF_20230602_0_L2A"].startswith("granule_metadata.xml (the angles) is missing")
    assert not [f for f in os.listdir(tmp_path / "out") if "20230602" in f]


def test_cancel_stops_between_strips_and_leaves_nothing(scenes, tmp_path, monkeypatch):
    monkeypatch.setattr(biophysical, "PIXELS_PER_STRIP", 16 * l2adata.WIDTH)
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        run(scenes["folder"], tmp_path, ["LAI"], pattern="*N0509*", is_cancelled=cancelled)
    assert os.listdir(tmp_path) == []


# ---- S3 -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bucket():
    pytest.importorskip("moto", reason="moto's S3 server plays the bucket (make deps installs it)")
    import s3server

    with s3server.moto_server() as url, s3server.Gate(url) as gate:
        s3server.client(url).create_bucket(Bucket="results", CreateBucketConfiguration={
            "LocationConstraint": s3server.REGION})
        yield url, gate, s3server.client(url)


def keys(client, prefix=""):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket="results", Prefix=prefix).get("Contents", []))


def s3_output(url, prefix):
    return storage.output_for(f"s3://results/{prefix}", credentials=storage.Credentials(
        "AKIAEXAMPLE", "not-a-real-secret", url, s3server_region()))


def s3server_region():
    import s3server

    return s3server.REGION


def test_outputs_go_to_an_s3_bucket_complete_and_a_rerun_skips_them(scenes, bucket):
    url, gate, client = bucket
    output = s3_output(gate.url, "run1/bio")
    work = biophysical.plan(scenes["folder"], output, ["LAI", "FAPAR"], 20, pattern="*N0509*")
    gate.faults.append(("PUT", "_FAPAR_", 503))  # one refusal with Retry-After: retried
    result = biophysical.execute(work)
    assert result.failed == {}
    name = result.products[0]
    assert keys(client, "run1/") == [f"run1/bio/{name}_{v}_20m.tif" for v in ("FAPAR", "LAI", "QUALITY")]
    assert result.outputs[name][0] == f"/vsis3/results/run1/bio/{name}_LAI_20m.tif"
    body = client.get_object(Bucket="results", Key=f"run1/bio/{name}_LAI_20m.tif")["Body"].read()
    local = biophysical.process_product(scenes["sen2cor"], storage.output_for(str(scenes["folder"] + "-local")),
                                        ["LAI", "FAPAR"], 20)
    with open(local[0], "rb") as handle:
        assert np.array_equal(read(local[0])[0], gdal.Open(result.outputs[name][0]).ReadAsArray(),
                              equal_nan=True) and len(body) == len(handle.read())
    puts = [p for m, p in gate.requests if m == "PUT" and "_FAPAR_" in p]
    assert len(puts) == 2  # the refused one and its retry
    gate.requests.clear()
    again = biophysical.plan(scenes["folder"], s3_output(gate.url, "run1/bio"), ["LAI", "FAPAR"], 20,
                             pattern="*N0509*")
    assert again.todo == [] and list(again.skipped) == [name]
    assert not [p for m, p in gate.requests if m == "PUT"]
    assert not os.listdir(output.staging_folder())


def test_a_failed_upload_leaves_none_of_the_products_files_in_the_bucket(scenes, bucket, monkeypatch):
    url, gate, client = bucket
    monkeypatch.setattr(storage._BucketCalls, "RETRY", {"GDAL_HTTP_MAX_RETRY": "1", "GDAL_HTTP_RETRY_DELAY": "0.1"})
    gate.faults.append(("PUT", "_QUALITY_", 500, True))  # every try: the product cannot be completed
    try:
        work = biophysical.plan(scenes["folder"], s3_output(gate.url, "run2"), ["LAI"], 20, pattern="*N0509*")
        result = biophysical.execute(work)
    finally:
        gate.faults.clear()
    assert list(result.failed) == [product_stem(scenes["sen2cor"])]
    assert "Cannot upload" in result.failed[product_stem(scenes["sen2cor"])]
    assert keys(client, "run2/") == []


def test_a_bucket_that_does_not_answer_is_refused_before_any_work(scenes, bucket, tmp_path):
    url, _gate, _client = bucket
    output = storage.output_for("s3://missing-bucket/x", credentials=storage.Credentials(
        "AKIAEXAMPLE", "not-a-real-secret", url, s3server_region()))
    with pytest.raises(ParameterError, match=r"^OUTPUT_FOLDER: the bucket missing-bucket cannot be listed") as error:
        biophysical.plan(scenes["folder"], output, ["LAI"], 20)
    assert "not-a-real-secret" not in str(error.value)
    with pytest.raises(ParameterError, match="^OUTPUT_FOLDER: s3://Bad_Bucket is not an S3 location"):
        storage.output_for("s3://Bad_Bucket")


# ---- what sentinel2:download SOURCE=stac writes is an input -------------------------------------------------

def test_a_stac_download_brings_what_the_processor_needs(scenes, tmp_path, http_server):  # noqa: F811
    """Earth Search's real item (its band keys, raster:bands scale and offset, granule_metadata asset) pointing
    at a local range-serving host: the download saves item.json and granule_metadata.xml beside the bands, and
    the folder gives the same LAI as the Sen2Cor product of the same scene."""
    import json

    from conftest import tracked_session
    from replicas import cogs

    from sentinel2_pipeline.plugin.engine import download
    from sentinel2_pipeline.plugin.engine.catalogs import stac as stac_catalogue
    from sentinel2_pipeline.plugin.engine.sources import Options

    keys = {"B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2", "B07": "rededge3",
            "B8A": "nir08", "B11": "swir16", "B12": "swir22", "SCL": "scl"}
    with open(l2adata.ITEM, encoding="utf-8") as handle:
        item = json.load(handle)
    with cogs.RangeFileServer(scenes["stac"]) as files:
        for band, key in keys.items():
            item["assets"][key]["href"] = files.url(f"{band}.tif")
        item["assets"]["granule_metadata"]["href"] = files.url("granule_metadata.xml")
        item["assets"] = {k: v for k, v in item["assets"].items() if k in set(keys.values()) | {"granule_metadata"}}
        item["properties"]["platform"] = "sentinel-2b"
        http_server.route("/item", json.dumps(item), headers={"Content-Type": "application/geo+json"})
        footprint = stac_catalogue.item_footprint(item, "earth-search", "L2A")
        footprint.download_url = http_server.url("/item")
        footprint.name = l2adata.STAC_NAME
        bands = list(keys)
        summary = download.download([footprint], "stac", str(tmp_path / "in"), Options(bands=bands),
                                    tracked_session())
    folder = tmp_path / "in" / l2adata.STAC_NAME
    assert summary.failed == []
    assert {"item.json", "granule_metadata.xml", "B05.tif", "SCL.tif"} <= set(os.listdir(folder))
    _, result = run(str(tmp_path / "in"), tmp_path / "out", ["LAI"])
    assert result.failed == {}
    ours = read(result.outputs[l2adata.STAC_NAME][0])[0]
    _, reference_run = run(scenes["folder"], tmp_path / "ref", ["LAI"], pattern="*N0509*")
    expected = read(reference_run.outputs[reference_run.products[0]][0])[0]
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_errors_stay_sentences_when_the_host_turned_gdal_exceptions_on(scenes, tmp_path):
    """QGIS 3.44's Processing calls gdal.UseExceptions() on import: a product GDAL cannot read still fails alone,
    with a sentence, and a non-raster input to mergedem is still named."""
    import shutil

    from sentinel2_pipeline.plugin.engine import dem

    folder = tmp_path / "in"
    broken = shutil.copytree(scenes["stac"], folder / "S2B_23LLF_20230603_0_L2A")
    with open(os.path.join(broken, "B05.tif"), "w") as handle:
        handle.write("not a raster")
    (tmp_path / "notes.txt").write_text("not a raster")
    had = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        _, result = run(str(folder), tmp_path / "out", ["LAI"])
        with pytest.raises(ParameterError, match="^INPUT_RASTERS: cannot open .*notes.txt as a raster"):
            dem.plan(dem.SRTM, str(tmp_path / "dem.tif"), tiles="31TFK", input_rasters=[str(tmp_path / "notes.txt")])
    finally:
        if not had:
            gdal.DontUseExceptions()
    [(name, reason)] = result.failed.items()
    assert name == "S2B_23LLF_20230603_0_L2A" and "B05.tif" in reason and "Traceback" not in reason
