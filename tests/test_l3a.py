"""plugin.engine.l3a against the DLR replica (tests/replicas/dlr.py) served on 127.0.0.1.

The replica's tiles have their real position and extent but 300 m pixels for the 10 m bands (600 m for the
20 m bands and FLG_R2): 366 x 366 files. At that scale the grids of vertically adjacent tiles are offset by
20 m (their corners lie on the 60 m grid, not on a 300 m one), so the same-zone mosaic also takes the
nearest-neighbour path the real 10 m data never needs. The byte-count tests use 60 m pixels (1830 x 1830).
Test areas are rectangles on the tile's pixel grid (given to the engine in lon/lat with dense edges), so
expected extents and pixel values follow from the files without touching pixel-centre ties.
"""

import datetime as dt
import json
import os

import numpy as np
import pytest
import rasterio
from osgeo import gdal, ogr, osr
from replicas import dlr
from servers import faults

from sentinel2_pipeline.plugin.engine import http, l3a
from sentinel2_pipeline.plugin.engine.errors import Cancelled, ParameterError, ServiceError

TODAY = dt.date(2024, 6, 10)
BANDS = ["B2", "B3", "B4", "B5"]
LAYOUT = dlr.Layout(
    tiles=("32UQB", "32UQC", "32UQD", "33UVU"), months=("2021-04", "2021-05", "2021-06"), bands=tuple(BANDS),
    clouds=(("2021-05", 2),), snow=(("2021-06", 5),),
    missing=frozenset({("32UQC", "2021-06", None), ("32UQB", "2021-04", "B5")}))
# Rectangles (EPSG:32632) on the grids of 32UQB's 300 m and 600 m files (x = 699960 + 600 k, y = 5700000 - 600 j).
SMALL = (750360, 5620200, 759360, 5629200)  # inside 32UQB only
ACROSS = (720360, 5682000, 735360, 5712000)  # across the 32UQB / 32UQC boundary
CROSS_ZONE = "POLYGON((13.5 52.5,13.7 52.5,13.7 52.65,13.5 52.65,13.5 52.5))"  # 32UQD + 33UVU, mostly zone 33


def lonlat_rectangle(box, epsg=32632, step=50.0):
    """A UTM rectangle as a lon/lat polygon whose edges follow the UTM lines within millimetres."""
    xmin, ymin, xmax, ymax = box
    points = []
    for (x0, y0), (x1, y1) in zip([(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax)],
                                  [(xmax, ymin), (xmax, ymax), (xmin, ymax), (xmin, ymin)]):
        count = max(int(max(abs(x1 - x0), abs(y1 - y0)) / step), 1)
        points.extend((x0 + (x1 - x0) * i / count, y0 + (y1 - y0) * i / count) for i in range(count))
    source, target = osr.SpatialReference(), osr.SpatialReference()
    source.ImportFromEPSG(epsg)
    target.ImportFromEPSG(4326)
    target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = osr.CoordinateTransformation(source, target)
    lonlat = [transform.TransformPoint(x, y)[:2] for x, y in points]
    return "POLYGON((" + ",".join(f"{x:.10f} {y:.10f}" for x, y in lonlat + lonlat[:1]) + "))"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return dlr.build(str(tmp_path_factory.mktemp("dlr") / "tree"), LAYOUT)


def start(folder, ranges=True, sizes="human"):
    return dlr.dlr_test_server(dlr.DlrReplica(folder, sizes=sizes), ranges=ranges)


@pytest.fixture
def server(tree):
    # One server per test: GDAL caches /vsicurl/ data per URL, and a new port makes every URL new.
    srv = start(tree)
    yield srv
    srv.stop()


@pytest.fixture
def session():
    with http.new_session(retries=2, backoff=0.01) as s:
        yield s


def discover(server, session, area, months=("2021-04", "2021-06"), bands=BANDS, **kwargs):
    return l3a.discover(area, *months, bands, url=server.root_url, session=session, today=TODAY, **kwargs)


def build(server, session, area, out, months=("2021-04", "2021-06"), bands=BANDS, **kwargs):
    plan = discover(server, session, area, months, bands)
    return l3a.build_mosaics(plan, str(out), session, **kwargs)


def tif_gets(server):
    return [r for r in server.requests if r.method == "GET" and r.path.endswith(".tif")]


def local(tree, tile_id, month, suffix):
    name = dlr.product_name(tile_id, month)
    folder = os.path.join(tree, dlr.product_folder(tile_id, month), name)
    return os.path.join(folder, f"{name}_{suffix}.tif")


def read(path, band=1):
    with rasterio.open(path) as dataset:
        return dataset.read(band), dataset


def gdal_reference(output, sources, epsg, cutline_wkt, tmp_path):
    """gdalwarp of ``sources`` (in order) onto the output's grid, cut to the area: the GDAL user's method."""
    cutline = tmp_path / "cutline.geojson"
    cutline.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {}, "geometry": json.loads(ogr.CreateGeometryFromWkt(cutline_wkt)
                                                                    .ExportToJson())}]}))
    with rasterio.open(output) as dataset:
        bounds, res = dataset.bounds, dataset.res[0]
    warped = gdal.Warp(str(tmp_path / "reference.tif"), sources, options=gdal.WarpOptions(
        outputBounds=tuple(bounds), xRes=res, yRes=res, dstSRS=f"EPSG:{epsg}", resampleAlg="near",
        cutlineDSName=str(cutline), srcNodata=-10000, dstNodata=-10000))
    values = warped.ReadAsArray()
    warped = None
    return values


# ---- parameters -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start_month, end_month, message", [
    ("2021-13", "2021-12", "START_MONTH: '2021-13' is not a month written YYYY-MM (e.g. 2021-05)."),
    ("2021-05", "2021/06", "END_MONTH: '2021/06' is not a month written YYYY-MM (e.g. 2021-05)."),
    ("2021-06", "2021-05", "END_MONTH: 2021-05 is before START_MONTH 2021-06."),
    ("2016-11", "2017-02", "START_MONTH: 2016-11 is before the DLR L3A composites start (2017-01)."),
    ("2024-05", "2024-07", "END_MONTH: 2024-07 is in the future (composites exist up to 2024-06 at most)."),
])
def test_bad_periods_are_one_sentence(start_month, end_month, message):
    with pytest.raises(ParameterError) as error:
        l3a.check_period(start_month, end_month, TODAY)
    assert str(error.value) == message


def test_period_spans_years_in_order():
    assert l3a.check_period("2020-11", "2021-02", TODAY) == [(2020, 11), (2020, 12), (2021, 1), (2021, 2)]


@pytest.mark.parametrize("bands, message", [
    ([], "BANDS: choose at least one band (B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12)."),
    (["B4", "B10"], "BANDS: B10 is not an L3A band; the composites have B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12."),
])
def test_bad_bands_are_one_sentence(bands, message):
    with pytest.raises(ParameterError) as error:
        l3a.check_bands(bands)
    assert str(error.value) == message


def test_bands_come_in_service_order_once():
    assert l3a.check_bands(["b8a", "B2", "B12", "B2"]) == ["B2", "B8A", "B12"]


def test_area_outside_germany_fails_before_any_request(session):
    toulouse = "POLYGON((1.2 43.4,1.8 43.4,1.8 43.8,1.2 43.8,1.2 43.4))"
    with pytest.raises(ParameterError) as error:
        l3a.discover(toulouse, "2021-04", "2021-05", ["B4"], session=session, today=TODAY)  # default URL: DLR
    assert str(error.value).startswith("AOI: the area lies outside Germany, the only area the DLR L3A composites "
                                       "cover")


@pytest.mark.parametrize("area, message", [
    ("POLYGON EMPTY", "AOI: the area is empty."),
    ("LINESTRING(12 51,12.1 51.1)", "AOI: the area has no surface; L3A mosaics need a polygon."),
])
def test_empty_or_flat_areas_are_refused(session, area, message):
    with pytest.raises(ParameterError, match=f"^{message}$"):
        l3a.discover(area, "2021-04", "2021-05", ["B4"], session=session, today=TODAY)


def test_url_must_be_http(session):
    with pytest.raises(ParameterError, match="^URL: 'ftp://x/' is not an http"):
        l3a.discover(lonlat_rectangle(SMALL), "2021-04", "2021-05", ["B4"], url="ftp://x/", session=session,
                     today=TODAY)


# ---- listings ------------------------------------------------------------------------------------------------


def test_apache_listing_gives_names_from_hrefs_and_rounded_sizes(tree):
    replica = dlr.DlrReplica(tree)
    product = dlr.product_name("32UQB", "2021-05")
    path = f"{replica.root}32/U/QB/2021/{product}/"
    status, _, body = replica.answer(path)
    entries = {e.name: e for e in l3a.parse_listing(body.decode(), "http://h" + path)}
    assert status == 200 and "..&gt;" in body.decode()  # link texts are cut, as Apache does
    frc = entries[f"{product}_FRC_B4.tif"]
    actual = os.path.getsize(local(tree, "32UQB", "2021-05", "FRC_B4"))
    assert not frc.folder and not frc.exact and abs(frc.size - actual) <= max(actual * 0.06, 1024)
    assert set(entries) == {f"{product}_FRC_{b}.tif" for b in BANDS} | {f"{product}_FLG_R1.tif",
                                                                      f"{product}_FLG_R2.tif"}


def test_nginx_and_lighttpd_listings():
    nginx = ('<html><head><title>Index of /f/</title></head><body><h1>Index of /f/</h1><hr><pre>'
             '<a href="../">../</a>\n'
             '<a href="SENTINEL2X_20210515-000000-000_L3A_T32UQB_C_V1-2/">'
             'SENTINEL2X_20210515-000000-000_L3A_T32UQB_C..&gt;</a>'
             ' 02-Mar-2022 10:11                   -\n'
             '<a href="a%20b_FRC_B4.tif">a b_FRC_B4.tif</a>          02-Mar-2022 10:11            251658240\n'
             '</pre><hr></body></html>')
    entries = l3a.parse_listing(nginx, "http://h/f/")
    assert [(e.name, e.folder, e.size, e.exact) for e in entries] == [
        ("SENTINEL2X_20210515-000000-000_L3A_T32UQB_C_V1-2", True, None, False),
        ("a b_FRC_B4.tif", False, 251658240, True)]
    lighttpd = ('<tr class="d"><td class="n"><a href="MASKS/">MASKS</a>/</td><td class="m">2022-Mar-02 10:11:00'
                '</td><td class="s">- &nbsp;</td><td class="t">Directory</td></tr>'
                '<tr><td class="n"><a href="x_FLG_R2.tif">x_FLG_R2.tif</a></td><td class="m">2022-Mar-02 10:11:00'
                '</td><td class="s">5.5M</td><td class="t">image/tiff</td></tr>'
                '<a href="?C=S;O=A">Size</a><a href="https://elsewhere.example/f/x.tif">x</a>'
                '<a href="/f/">up</a><a href="/f/a/b.tif">deeper</a>')
    entries = {e.name: e for e in l3a.parse_listing(lighttpd, "http://h/f/")}
    assert entries["MASKS"].folder and entries["x_FLG_R2.tif"].size == int(5.5 * 1024 ** 2)
    assert set(entries) == {"MASKS", "x_FLG_R2.tif"}


# ---- discovery -----------------------------------------------------------------------------------------------


def test_discovery_lists_each_tile_year_once_and_each_needed_product_once(server, session):
    plan = discover(server, session, lonlat_rectangle(ACROSS))
    assert [t.tile_id for t in plan.tiles] == ["32UQB", "32UQC"]
    # 2 tile-year folders + 5 product folders (32UQC has no 2021-06); sizes come from the listings: no HEAD.
    assert plan.requests == len(server.requests) == 7
    assert all(r.method == "GET" and r.path.endswith("/") for r in server.requests)
    assert sorted((k[0], l3a.month_text(k[1])) for k in plan.products) == [
        ("32UQB", "2021-04"), ("32UQB", "2021-05"), ("32UQB", "2021-06"), ("32UQC", "2021-04"), ("32UQC", "2021-05")]


def test_discovery_across_years(tmp_path, session):
    folder = dlr.build(str(tmp_path / "t"), dlr.Layout(tiles=("32UQB",), months=("2020-12", "2021-01"),
                                                       bands=("B4",)))
    with start(folder) as srv:
        plan = discover(srv, session, lonlat_rectangle(SMALL), ("2020-12", "2021-01"), ["B4"])
        paths = [r.path for r in srv.requests]
    assert plan.requests == 4 and sum(p.endswith(("/2020/", "/2021/")) for p in paths) == 2
    assert sorted(plan.products) == [("32UQB", (2020, 12)), ("32UQB", (2021, 1))]


def test_masks_subfolder_costs_one_listing_more_and_unknown_sizes_a_head_each(tmp_path, session):
    layout = dlr.Layout(tiles=("32UQB",), months=("2021-05",), bands=("B4", "B5"), masks="MASKS")
    folder = dlr.build(str(tmp_path / "t"), layout)
    with start(folder, sizes="none") as srv:
        plan = discover(srv, session, lonlat_rectangle(SMALL), ("2021-05", "2021-05"), ["B4", "B5"])
        heads = [r.path.rsplit("_", 1)[-1] for r in srv.requests if r.method == "HEAD"]
    product = plan.products[("32UQB", (2021, 5))]
    assert product.mask().url.endswith("/MASKS/" + dlr.product_name("32UQB", "2021-05") + "_FLG_R2.tif")
    assert sorted(heads) == ["B4.tif", "B5.tif", "R2.tif"]  # only the files the mosaics need
    assert plan.requests == 3 + 3 and all(f.exact for f in plan.needed_files())
    assert plan.whole_file_bytes() == (sum(os.path.getsize(os.path.join(root, name))
                                           for root, _, names in os.walk(folder) for name in names
                                           if name.endswith(("B4.tif", "B5.tif", "R2.tif"))), True)


def test_newest_version_is_used_and_unrelated_links_are_ignored(tmp_path, session):
    layout = dlr.Layout(tiles=("32UQB",), months=("2021-05",), bands=("B4",), version="V1-3",
                        versions=(("2021-05", ("V1-2",)),))
    folder = dlr.build(str(tmp_path / "t"), layout)
    year = os.path.join(folder, "32", "U", "QB", "2021")
    os.makedirs(os.path.join(year, "thumbnails"))
    os.makedirs(os.path.join(year, dlr.product_name("32UQC", "2021-05")))  # another tile's name: not ours
    open(os.path.join(year, "README.txt"), "w").close()
    with start(folder) as srv:
        plan = discover(srv, session, lonlat_rectangle(SMALL), ("2021-05", "2021-05"), ["B4"])
        listed = [r.path for r in srv.requests]
    product = plan.products[("32UQB", (2021, 5))]
    assert product.version == "V1-3" and product.other_versions == [dlr.product_name("32UQB", "2021-05", "V1-2")]
    assert plan.notes == ["32UQB 2021-05: using V1-3, the newest of V1-2, V1-3."]
    assert len(listed) == 2 and not any("thumbnails" in p or "T32UQC" in p for p in listed)


def test_tiles_not_on_the_server_are_reported(session, tmp_path):
    folder = dlr.build(str(tmp_path / "t"), dlr.Layout(tiles=("32UQD",), months=("2021-04",), bands=("B4",)))
    with start(folder) as srv:
        plan = discover(srv, session, CROSS_ZONE, ("2021-04", "2021-04"), ["B4"])
        assert len(srv.requests_to(srv.replica.root + "33/U/VU/2021/")) == 1  # answered 404
    assert [t.tile_id for t in plan.tiles] == ["32UQD", "33UVU"] and plan.tiles_on_server == {"32UQD"}
    assert {"tile_id": "33UVU", "month": None, "band": None,
            "reason": "the server has no composites of this tile for these years"} in plan.missing()
    lines = l3a.summary_lines(l3a.plan_report(plan))
    assert "Not on the server: tile(s) 33UVU (the DLR composites cover Germany only)." in lines


def test_an_area_none_of_whose_tiles_is_served_is_one_sentence(server, session):
    hamburg = "POLYGON((9.9 53.5,10.1 53.5,10.1 53.6,9.9 53.6,9.9 53.5))"
    with pytest.raises(ParameterError) as error:
        discover(server, session, hamburg, ("2021-04", "2021-05"), ["B4"])
    assert str(error.value) == ("AOI: the server has no composites of the tiles covering the area (32UNE) in "
                                "2021; the DLR L3A composites cover Germany only.")


def test_dropped_listing_connection_is_retried(server, session):
    server.route_for(server.replica.root + "32/U/QB/2021/").fail(faults.drop())
    plan = discover(server, session, lonlat_rectangle(SMALL), ("2021-05", "2021-05"), ["B4"])
    assert ("32UQB", (2021, 5)) in plan.products
    assert len(server.requests_to(server.replica.root + "32/U/QB/2021/")) == 2


def test_a_failing_server_is_one_sentence_naming_it(server, session):
    server.route_for(server.replica.root + "32/U/QB/2021/").fail(*[faults.status(503)] * 5)
    with pytest.raises(ServiceError) as error:
        discover(server, session, lonlat_rectangle(SMALL), ("2021-05", "2021-05"), ["B4"])
    assert str(error.value).startswith("the DLR L3A server (127.0.0.1) is unavailable (HTTP 503")
    assert "\n" not in str(error.value)


# ---- the report ----------------------------------------------------------------------------------------------


def test_report_is_written_before_any_pixel_is_read(server, session, tmp_path):
    seen = {}

    def log(line):
        if line.startswith("Reading") and not seen:
            seen["report"] = json.loads((tmp_path / l3a.REPORT_NAME).read_text())
            seen["tif_requests"] = [r.headers.get("Range") for r in tif_gets(server)]

    result = build(server, session, lonlat_rectangle(ACROSS), tmp_path, log=log)
    report = seen["report"]
    assert seen["tif_requests"] == ["bytes=0-0"]  # only the Range probe so far
    assert report["stage"] == "discovered" and report["listing_requests"] == 7
    assert [(m["month"], m["found"]) for m in report["months"]] == [
        ("2021-04", "partial"), ("2021-05", "complete"), ("2021-06", "partial")]
    assert {"tile_id": "32UQC", "month": "2021-06", "band": None, "reason": "no composite of this month"} in \
        report["missing"]
    assert {"tile_id": "32UQB", "month": "2021-04", "band": "B5", "reason": "the product has no FRC_B5 file"} in \
        report["missing"]
    whole = sum(os.path.getsize(local(server.replica.folder, t, m, s))
                for t, m in [("32UQB", "2021-04"), ("32UQB", "2021-05"), ("32UQB", "2021-06"),
                             ("32UQC", "2021-04"), ("32UQC", "2021-05")]
                for s in ["FLG_R2"] + [f"FRC_{b}" for b in BANDS] if not (t == "32UQB" and m == "2021-04" and s ==
                                                                         "FRC_B5"))
    assert abs(report["whole_file_bytes"] - whole) < whole * 0.05 and not report["whole_file_bytes_exact"]
    final = json.loads((tmp_path / l3a.REPORT_NAME).read_text())
    assert final["stage"] == "complete" and final["read_mode"] == "range" and result.report == final


# ---- reading ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fine_tree(tmp_path_factory):
    layout = dlr.Layout(tiles=("32UQB",), months=("2021-05",), bands=("B4",), pixel=60.0)
    return dlr.build(str(tmp_path_factory.mktemp("fine") / "tree"), layout)


def test_window_reads_transfer_a_small_part_of_the_files(fine_tree, session, tmp_path):
    with start(fine_tree) as srv:
        build(srv, session, lonlat_rectangle(SMALL), tmp_path, ("2021-05", "2021-05"), ["B4"])
        sent = srv.bytes_sent(srv.replica.root + "32/")
        files = srv.bytes_sent("/S2_L3A_WASP/files/32/U/QB/2021/SENTINEL")  # includes the listings of the product
    whole = sum(os.path.getsize(local(fine_tree, "32UQB", "2021-05", s)) for s in ("FRC_B4", "FLG_R2"))
    # The area is 9 km x 9 km of a 109.8 km tile (0.7 %); GDAL reads its header (16 KB a file) and the few
    # 64 x 64 blocks that meet the area.
    assert files < 0.2 * whole, (files, whole)
    assert sent < 0.25 * whole
    data, dataset = read(tmp_path / "s2_l3a_202105_B4.tif")
    assert data.shape == (150, 150) and (data != -10000).all()


def test_without_range_whole_files_are_downloaded_once_and_reused(fine_tree, session, tmp_path):
    area = lonlat_rectangle(SMALL)
    with start(fine_tree) as srv:
        build(srv, session, area, tmp_path / "ranged", ("2021-05", "2021-05"), ["B4"])
    with start(fine_tree, ranges=False) as srv:
        result = build(srv, session, area, tmp_path / "whole", ("2021-05", "2021-05"), ["B4"])
        gets = [r.path.rsplit("_", 1)[-1] for r in tif_gets(srv)]
        srv.reset_counts()
        build(srv, session, area, tmp_path / "whole", ("2021-05", "2021-05"), ["B4"])
        again = [r.path.rsplit("_", 1)[-1] for r in tif_gets(srv)]
    assert result.report["read_mode"] == "whole files"
    assert sorted(gets) == ["B4.tif", "R2.tif", "R2.tif"]  # the Range probe (on the mask), then each file once
    assert again == ["R2.tif"]  # only the probe: the cache serves the re-run
    cache = tmp_path / "whole" / "l3a_cache" / "32" / "U" / "QB" / "2021" / dlr.product_name("32UQB", "2021-05")
    assert sorted(os.listdir(cache)) == sorted(os.path.basename(local(fine_tree, "32UQB", "2021-05", s))
                                               for s in ("FLG_R2", "FRC_B4"))
    ranged, _ = read(tmp_path / "ranged" / "s2_l3a_202105_B4.tif")
    whole, _ = read(tmp_path / "whole" / "s2_l3a_202105_B4.tif")
    assert np.array_equal(ranged, whole)


def test_whole_file_download_survives_a_dropped_connection(fine_tree, session, tmp_path):
    with start(fine_tree, ranges=False, sizes="bytes") as srv:
        path = srv.replica.root + os.path.relpath(local(fine_tree, "32UQB", "2021-05", "FRC_B4"), fine_tree)
        srv.route_for(path).fail(faults.drop_mid(5000))
        build(srv, session, lonlat_rectangle(SMALL), tmp_path, ("2021-05", "2021-05"), ["B4"])
        assert len(srv.requests_to(path, "GET")) == 2
    cached = tmp_path / "l3a_cache" / os.path.relpath(local(fine_tree, "32UQB", "2021-05", "FRC_B4"), fine_tree)
    with open(cached, "rb") as a, open(local(fine_tree, "32UQB", "2021-05", "FRC_B4"), "rb") as b:
        assert a.read() == b.read()


def test_a_file_that_cannot_be_downloaded_is_reported_with_its_month(tree, session, tmp_path):
    with start(tree, ranges=False, sizes="bytes") as srv:
        path = srv.replica.root + os.path.relpath(local(tree, "32UQB", "2021-05", "FRC_B3"), tree)
        srv.route_for(path).fail(*[faults.status(404)] * 5)
        result = build(srv, session, lonlat_rectangle(SMALL), tmp_path, ("2021-05", "2021-05"), ["B3", "B4"])
    month = result.report["months"][0]
    assert month["files"] == ["s2_l3a_202105_B4.tif"] and month["status"] == "failed"
    assert "FRC_B3.tif" in month["errors"][0] and "404" in month["errors"][0]
    assert result.failed == [f"2021-05: {month['errors'][0]}"]


def test_window_reads_survive_dropped_connections(tree, session, tmp_path):
    area = lonlat_rectangle(SMALL)
    with start(tree) as srv:
        build(srv, session, area, tmp_path / "clean", ("2021-05", "2021-05"), ["B4"])
    with start(tree) as srv:
        path = srv.replica.root + os.path.relpath(local(tree, "32UQB", "2021-05", "FRC_B4"), tree)
        srv.route_for(path).fail(faults.drop(), faults.reset())
        build(srv, session, area, tmp_path / "dropped", ("2021-05", "2021-05"), ["B4"])
        attempts = len(srv.requests_to(path))
    clean, _ = read(tmp_path / "clean" / "s2_l3a_202105_B4.tif")
    dropped, _ = read(tmp_path / "dropped" / "s2_l3a_202105_B4.tif")
    assert np.array_equal(clean, dropped) and attempts >= 3


def test_a_listed_file_that_is_gone_fails_its_band_and_is_reported(server, session, tmp_path):
    path = server.replica.root + os.path.relpath(local(server.replica.folder, "32UQB", "2021-05", "FRC_B3"),
                                                 server.replica.folder)
    server.route_for(path).fail(*[faults.status(404)] * 10)
    result = build(server, session, lonlat_rectangle(SMALL), tmp_path, ("2021-05", "2021-05"), ["B2", "B3", "B4"])
    assert [os.path.basename(f) for f in result.files] == ["s2_l3a_202105_B2.tif", "s2_l3a_202105_B4.tif"]
    assert len(result.failed) == 1 and result.failed[0].startswith("2021-05: Could not read ")
    month = result.report["months"][0]
    assert month["status"] == "failed" and "FRC_B3.tif" in month["errors"][0]
    assert result.layers[0].path.endswith("s2_l3a_202105_B2.tif")  # no true colour without B3
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".part")]


def test_gdal_reads_send_the_user_agent(server, session, tmp_path):
    build(server, session, lonlat_rectangle(SMALL), tmp_path, ("2021-05", "2021-05"), ["B4"])
    agents = {r.headers.get("User-Agent") for r in tif_gets(server)}
    assert agents == {session.headers["User-Agent"]}


def test_gdal_options_carry_the_sessions_proxy():
    with http.new_session(proxies={"http": "http://us%40r:p%3Ass@proxy.example:3128", "https": "http://p:1",
                                   "no_proxy": "127.0.0.1"}) as s:
        options = l3a.gdal_options(s, "http://dlr.example/files/")
        direct = l3a.gdal_options(s, "http://127.0.0.1:8000/files/")
    assert options["GDAL_HTTP_PROXY"] == "http://proxy.example:3128"
    assert options["GDAL_HTTP_PROXYUSERPWD"] == "us@r:p:ss"
    assert direct["GDAL_HTTP_PROXY"] == "" and "GDAL_HTTP_PROXYUSERPWD" not in direct
    assert options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"


# ---- mosaics -----------------------------------------------------------------------------------------------------


def test_mosaic_of_two_tiles_in_one_zone_matches_gdalwarp(server, session, tmp_path):
    area = lonlat_rectangle(ACROSS)
    result = build(server, session, area, tmp_path, ("2021-05", "2021-05"), ["B4", "B5"])
    tree = server.replica.folder
    for band, res in (("B4", 300.0), ("B5", 600.0)):
        ours, dataset = read(tmp_path / f"s2_l3a_202105_{band}.tif")
        assert dataset.crs.to_epsg() == 32632 and dataset.res == (res, res)
        assert tuple(dataset.bounds) == pytest.approx(ACROSS)  # the area's bounds, on the tiles' grid
        sources = [local(tree, t, "2021-05", f"FRC_{band}") for t in ("32UQB", "32UQC")]
        reference = gdal_reference(dataset.name, sources, 32632, area, tmp_path)
        assert np.array_equal(ours, reference)
        assert (ours != -10000).all()
    by_tile = {tile: read(local(tree, tile, "2021-05", "FRC_B4"))[0] for tile in ("32UQB", "32UQC")}
    ours, _ = read(tmp_path / "s2_l3a_202105_B4.tif")
    # North of 32UQB's top edge (5700000) only 32UQC has data; in the overlap 32UQC, the later id, wins.
    top_row_32uqc = int(round((5800020 - (5712000 - 150)) // 300))
    assert ours[0, 0] == by_tile["32UQC"][top_row_32uqc, (720360 + 150 - 699960) // 300]
    assert ours[-1, 0] == by_tile["32UQB"][(5700000 - 5682150) // 300, (720360 + 150 - 699960) // 300]
    assert [layer.name for layer in result.layers] == ["L3A 2021-05 B4", "L3A 2021-05 B5"]


def test_mosaic_across_zones_is_warped_to_the_zone_holding_most_of_the_area(server, session, tmp_path):
    build(server, session, CROSS_ZONE, tmp_path, ("2021-05", "2021-05"), ["B4"])
    ours, dataset = read(tmp_path / "s2_l3a_202105_B4.tif")
    assert dataset.crs.to_epsg() == 32633 and dataset.res == (300.0, 300.0)
    assert (dataset.bounds.left - 399960) % 300 == pytest.approx(0) and (dataset.bounds.top - 5900040) % 300 == \
        pytest.approx(0)
    tree = server.replica.folder
    sources = [local(tree, t, "2021-05", "FRC_B4") for t in ("32UQD", "33UVU")]
    reference = gdal_reference(dataset.name, sources, 32633, CROSS_ZONE, tmp_path)
    interior = _inside(CROSS_ZONE, dataset, -1.5)
    assert np.array_equal(ours[interior], reference[interior])
    assert (ours[interior] != -10000).all()
    # West of 33UVU's first columns with data only the warped 32UQD can have given these pixels.
    centres = dataset.bounds.left + (np.arange(dataset.width) + 0.5) * 300
    west = interior & (centres < 399960 + dlr.EDGE * 300)[None, :]
    assert west.sum() > 20


def _inside(wkt_lonlat, dataset, buffer_pixels):
    """Pixels whose centre lies inside the area grown (or shrunk, negative) by ``buffer_pixels``."""
    geometry = l3a.aoi_in(ogr.CreateGeometryFromWkt(wkt_lonlat), dataset.crs.to_epsg()).Buffer(
        buffer_pixels * dataset.res[0])
    grid = l3a.Grid(dataset.crs.to_epsg(), dataset.bounds.left, dataset.bounds.top, dataset.res[0], dataset.width,
                    dataset.height)
    return l3a.inside_mask(geometry, grid)


class _CountingReads:
    """A rasterio dataset that records the windows read from it."""

    def __init__(self, dataset):
        self.dataset, self.windows = dataset, []

    def read(self, *args, **kwargs):
        self.windows.append(kwargs["window"])
        return self.dataset.read(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.dataset, name)


def test_overlaps_are_read_from_one_tile_only(tree):
    # 32UQC (the later id) covers y >= 5690220; 32UQB is read only for what 32UQC leaves missing.
    with rasterio.open(local(tree, "32UQB", "2021-05", "FRC_B4")) as south, \
            rasterio.open(local(tree, "32UQC", "2021-05", "FRC_B4")) as north:
        datasets = [_CountingReads(south), _CountingReads(north)]
        inside_north = l3a.Grid(32632, 720360, 5697000, 300, 50, 20)
        values = l3a.mosaic(datasets, inside_north, -10000, lambda v: v != -10000, np.ones((20, 50), bool), "int16")
        assert len(datasets[1].windows) == 1 and datasets[0].windows == []
        assert (values != -10000).all()
        across = l3a.Grid(32632, 720360, 5697000, 300, 50, 50)
        l3a.mosaic(datasets, across, -10000, lambda v: v != -10000, np.ones((50, 50), bool), "int16")
        [window] = datasets[0].windows
        assert window.height <= 28  # the 27 rows south of 32UQC (plus the row the grids' offset splits)
        holes = np.zeros((50, 50), bool)
        holes[40:45, 10:12] = True  # only these pixels wanted: a 5 x 2 read
        l3a.mosaic(datasets, across, -10000, lambda v: v != -10000, holes, "int16")
        assert (datasets[0].windows[-1].height, datasets[0].windows[-1].width) == (5, 2)


def test_clip_outside_the_area_is_nodata_and_extent_is_snapped(server, session, tmp_path):
    xmin, ymin, xmax, ymax = SMALL
    triangle = f"POLYGON(({xmin + 100} {ymin + 100},{xmax - 100} {ymin + 100},{xmin + 100} {ymax - 100}," \
               f"{xmin + 100} {ymin + 100}))"
    source, target = osr.SpatialReference(), osr.SpatialReference()
    source.ImportFromEPSG(32632)
    target.ImportFromEPSG(4326)
    target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    geometry = ogr.CreateGeometryFromWkt(triangle)
    geometry.Segmentize(50)
    geometry.Transform(osr.CoordinateTransformation(source, target))
    area = geometry.ExportToWkt()
    build(server, session, area, tmp_path, ("2021-05", "2021-05"), ["B4"])
    ours, dataset = read(tmp_path / "s2_l3a_202105_B4.tif")
    # Bounds 100 m inside the grid lines snap outwards to them.
    assert tuple(dataset.bounds) == pytest.approx(SMALL)
    outside = ~_inside(area, dataset, 0.5)
    inside = _inside(area, dataset, -0.5)
    assert (ours[outside] == -10000).all() and outside.sum() > 300
    assert (ours[inside] != -10000).all() and inside.sum() > 300
    assert ours[-1, -1] == -10000 and ours[-1, 0] != -10000  # the triangle's corners: south-east out, south-west in


def test_months_above_max_masked_are_excluded_with_their_share(server, session, tmp_path):
    result = build(server, session, lonlat_rectangle(SMALL), tmp_path, max_masked=30)
    flags = read(local(server.replica.folder, "32UQB", "2021-05", "FLG_R2"))[0]
    rows = slice((5700000 - SMALL[3]) // 600, (5700000 - SMALL[1]) // 600)
    cols = slice((SMALL[0] - 699960) // 600, (SMALL[2] - 699960) // 600)
    expected = float(np.mean((flags[rows, cols] & 7) != 0))  # every 2nd row is cloud: 7 of 15 rows here
    months = {m["month"]: m for m in result.report["months"]}
    assert months["2021-05"]["masked"]["share"] == pytest.approx(expected, abs=1e-6)
    assert months["2021-05"]["masked"]["cloud"] == pytest.approx(expected, abs=1e-6)
    assert months["2021-05"]["status"] == "excluded"
    assert result.report["excluded"] == [{"month": "2021-05", "masked_share": round(expected, 6)}]
    snow = float(np.mean((read(local(server.replica.folder, "32UQB", "2021-06", "FLG_R2"))[0][rows, cols] & 4) != 0))
    assert months["2021-06"]["masked"]["snow"] == pytest.approx(snow) and months["2021-06"]["status"] == "written"
    assert 0 < snow < 0.3
    assert not [f for f in os.listdir(tmp_path) if f.startswith("s2_l3a_202105")]
    assert result.excluded == ["2021-05"]
    # The excluded month's bands were never read.
    assert not [r for r in tif_gets(server) if "202105" in r.path and "_FRC_" in r.path]


def test_max_masked_above_the_share_keeps_the_month(server, session, tmp_path):
    result = build(server, session, lonlat_rectangle(SMALL), tmp_path, ("2021-05", "2021-05"), ["B4"],
                   max_masked=60)
    assert result.report["months"][0]["status"] == "written" and result.excluded == []


def test_stack_has_band_descriptions_and_the_finest_grid(server, session, tmp_path):
    area = lonlat_rectangle(ACROSS)
    result = build(server, session, area, tmp_path, ("2021-05", "2021-05"), BANDS, stack=True)
    assert [os.path.basename(f) for f in result.files] == ["s2_l3a_202105_stack.tif"]
    with rasterio.open(tmp_path / "s2_l3a_202105_stack.tif") as dataset:
        assert dataset.descriptions == tuple(BANDS) and dataset.res == (300.0, 300.0) and dataset.count == 4
        b5 = dataset.read(4)
        assert dataset.tags()["L3A_MONTH"] == "2021-05"
    sources = [local(server.replica.folder, t, "2021-05", "FRC_B5") for t in ("32UQB", "32UQC")]
    reference = gdal_reference(str(tmp_path / "s2_l3a_202105_stack.tif"), sources, 32632, area, tmp_path)
    # gdalwarp cuts in source pixels (600 m), we cut in output pixels (300 m): compare away from the edge.
    with rasterio.open(tmp_path / "s2_l3a_202105_stack.tif") as dataset:
        interior = _inside(area, dataset, -2.5)
    assert interior.sum() > 0.8 * b5.size and np.array_equal(b5[interior], reference[interior])
    assert (b5 != -10000).all()
    [layer] = result.layers
    assert layer.path.endswith("s2_l3a_202105_truecolour.vrt") and layer.bands == ["B4", "B3", "B2"]
    with rasterio.open(layer.path) as vrt:
        assert vrt.descriptions == ("B4", "B3", "B2")
        with rasterio.open(tmp_path / "s2_l3a_202105_stack.tif") as dataset:
            assert np.array_equal(vrt.read(1), dataset.read(3))


def test_true_colour_layer_per_month_with_stretch(server, session, tmp_path):
    result = build(server, session, lonlat_rectangle(ACROSS), tmp_path, bands=["B2", "B3", "B4"])
    assert [(layer.month, os.path.basename(layer.path)) for layer in result.layers] == [
        ("2021-04", "s2_l3a_202104_truecolour.vrt"), ("2021-05", "s2_l3a_202105_truecolour.vrt"),
        ("2021-06", "s2_l3a_202106_truecolour.vrt")]
    layer = result.layers[1]
    with rasterio.open(layer.path) as vrt:
        red = vrt.read(1)
        assert vrt.count == 3
    low, high = layer.stretch[0]
    valid = red[red != -10000]
    assert low == int(np.percentile(valid, 2, method="inverted_cdf"))
    assert high == int(np.percentile(valid, 98, method="inverted_cdf"))
    with open(layer.path, encoding="utf-8") as stream:
        assert '<SourceFilename relativeToVRT="1">s2_l3a_202105_B4.tif' in stream.read()  # the folder can move


def test_missing_months_and_bands_are_reported_and_partial_mosaics_written(server, session, tmp_path):
    result = build(server, session, lonlat_rectangle(ACROSS), tmp_path, bands=["B4", "B5"])
    months = {m["month"]: m for m in result.report["months"]}
    assert months["2021-04"]["bands"]["B5"] == ["32UQC"] and months["2021-04"]["status"] == "written"
    assert months["2021-06"]["products"] == {"32UQB": dlr.product_name("32UQB", "2021-06")}
    b5, _ = read(tmp_path / "s2_l3a_202104_B5.tif")
    assert (b5[0] != -10000).all() and (b5[-1] == -10000).all()  # 32UQC covers the north only
    lines = l3a.summary_lines(result.report)
    assert "Missing files: 32UQB 2021-04 B5." in lines
    assert any(line.startswith("2021-06: partial (32UQB)") for line in lines)


def test_period_without_composites_writes_the_report_and_says_so(server, session, tmp_path):
    plan = discover(server, session, lonlat_rectangle(SMALL), ("2021-08", "2021-09"), ["B4"])
    with pytest.raises(ServiceError) as error:
        l3a.build_mosaics(plan, str(tmp_path), session)
    assert str(error.value).startswith("the DLR L3A server (127.0.0.1) has no composite of the area's tiles from "
                                       "2021-08 to 2021-09")
    assert json.loads((tmp_path / l3a.REPORT_NAME).read_text())["months"][0]["found"] == "missing"


def test_cancel_stops_and_leaves_no_partial_files(server, session, tmp_path):
    plan = discover(server, session, lonlat_rectangle(ACROSS))
    calls = []

    def is_cancelled():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        l3a.build_mosaics(plan, str(tmp_path), session, is_cancelled=is_cancelled)
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".part")]
    assert len([name for name in os.listdir(tmp_path) if name.endswith(".tif")]) < 12
