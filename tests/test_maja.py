"""Engine tests of sentinel2:maja (no QGIS).

MODE=geodes runs against the GEODES-flavoured STAC replica on 127.0.0.1, extended with THEIA L2A items whose zips
are real MUSCATE products behind the API key. MODE=local runs the production runner against the stand-in
``tests/standins/maja`` (real command line, input-folder checks, MUSCATE output, failures and hangs on demand).
"""

import datetime as dt
import json
import os
import shutil
import signal
import threading
import time

import pytest
from conftest import FIXTURES, ROOT
from replicas import stac as replica
from servers import TestServer, http_server  # noqa: F401 (fixture)
from test_safe import zip_folder

from sentinel2_pipeline.plugin.engine import http, maja
from sentinel2_pipeline.plugin.engine.errors import Cancelled, ParameterError, ServiceError

STANDIN = os.path.join(ROOT, "tests", "standins", "maja")
MTD_MSIL1C = os.path.join(FIXTURES, "s2_metadata", "MTD_MSIL1C_vhgauto-turb.xml")
KEY = "geodes-key-0123456789"
TILE = "31TCJ"
TODAY = dt.date(2026, 1, 1)


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------

def request(start="2023-06-01", end="2023-08-31", tile=TILE, **kwargs):
    return maja.period(tile, dt.date.fromisoformat(start), dt.date.fromisoformat(end), today=TODAY, **kwargs)


def l1c(folder, day, tile=TILE, platform="S2A", orbit=51, hour="105031"):
    """An L1C .SAFE with what MAJA reads first: the product and tile metadata (bands are not needed here)."""
    name = f"{platform}_MSIL1C_{day:%Y%m%d}T{hour}_N0509_R{orbit:03d}_T{tile}_{day:%Y%m%d}T140000.SAFE"
    granule = os.path.join(folder, name, "GRANULE", f"L1C_T{tile}_A000001_{day:%Y%m%d}T{hour}")
    os.makedirs(os.path.join(granule, "IMG_DATA"))
    shutil.copy(MTD_MSIL1C, os.path.join(folder, name, "MTD_MSIL1C.xml"))
    with open(os.path.join(granule, "MTD_TL.xml"), "w") as handle:
        handle.write("<n1:Level-1C_Tile_ID/>")
    return os.path.join(folder, name)


def series(folder, first, count, every=5, **kwargs):
    return [l1c(folder, first + dt.timedelta(days=every * i), **kwargs) for i in range(count)]


def gipp_set(folder, platforms=("S2A", "S2B")):
    os.makedirs(folder, exist_ok=True)
    stem = "00001_20190626_21000101"
    for platform in platforms:
        for kind in ("CKEXTL", "CKQLTL", "L2COMM", "L2SMAC"):
            open(os.path.join(folder, f"{platform}_TEST_GIP_{kind}_L_ALLSITES_{stem}.EEF"), "w").close()
        for kind in ("L2ALBD", "L2DIFT", "L2DIRT", "L2TOCR", "L2WATV"):
            base = os.path.join(folder, f"{platform}_TEST_GIP_{kind}_L_CONTINEN_{stem}")
            open(base + ".HDR", "w").close()
            os.makedirs(base + ".DBL.DIR")
    open(os.path.join(folder, f"S2__TEST_GIP_L2SITE_S_ALLSITES_{stem}.EEF"), "w").close()
    return folder


def dtm(folder, tile=TILE):
    base = os.path.join(folder, f"S2__TEST_AUX_REFDE2_T{tile}_0001")
    os.makedirs(base + ".DBL.DIR")
    open(os.path.join(base + ".DBL.DIR", f"S2__TEST_AUX_REFDE2_T{tile}_0001_ALT_R1.TIF"), "w").close()
    open(base + ".HDR", "w").close()
    return folder


def records(path):
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class Site:
    """Input, DTM, GIPP and output folders of one local-mode test, and the stand-in's record."""

    def __init__(self, tmp_path, record):
        self.input = str(tmp_path / "l1c")
        self.output = str(tmp_path / "l2a")
        self.dtm = dtm(str(tmp_path / "dtm"))
        self.gipp = str(tmp_path / "gipp")
        gipp_set(os.path.join(self.gipp, "SENTINEL2_NATIF"))
        os.makedirs(self.input)
        self.record = record
        self.lines = []

    def plan(self, req=None, **kwargs):
        arguments = {"executable": STANDIN, "dtm_folder": self.dtm, "gipp_folder": self.gipp, "environ": {},
                     **kwargs}
        return maja.plan_local(req or request(), self.input, self.output, **arguments)

    def run(self, req=None, is_cancelled=None, **kwargs):
        return maja.run_local(self.plan(req, **kwargs), is_cancelled=is_cancelled, log=self.lines.append)

    def modes(self):
        return [entry["mode"] for entry in records(self.record)]


@pytest.fixture
def site(monkeypatch, tmp_path):
    record = str(tmp_path / "record.jsonl")
    monkeypatch.setenv("STANDIN_MAJA_RECORD", record)
    monkeypatch.setenv("STANDIN_MAJA_SECONDS", "0.05")
    for name in ("FAIL", "HANG", "CLOUDY", "NOTV", "IGNORE_TERM"):
        monkeypatch.delenv(f"STANDIN_MAJA_{name}", raising=False)
    monkeypatch.delenv("MAJA_INSTALL_DIR", raising=False)
    yield Site(tmp_path, record)
    for entry in records(record):  # a failed test must not leave processes behind
        for pid in (entry["pid"], entry["child"]):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, parameter, words", [
    ({"tile": "31TZZ"}, "TILE", "not a Sentinel-2 tile id"),
    ({"tile": ""}, "TILE", "not a Sentinel-2 tile id"),
    ({"start": "2023-06-10", "end": "2023-06-01"}, "END", "before the start"),
    ({"start": "2015-06-01"}, "START", "before the first Sentinel-2 acquisitions (2015-06-23)"),
    ({"end": "2026-02-01"}, "END", "in the future (today is 2026-01-01)"),
    ({"relative_orbit": 144}, "RELATIVE_ORBIT", "outside 1–143"),
    ({"relative_orbit": -1}, "RELATIVE_ORBIT", "outside 1–143"),
    ({"max_cloud": 120}, "MAX_CLOUD", "outside 0–100"),
])
def test_bad_requests_are_one_sentence_naming_the_parameter(kwargs, parameter, words):
    with pytest.raises(ParameterError) as error:
        request(**kwargs)
    assert error.value.parameter == parameter and words in str(error.value) and "\n" not in str(error.value)


def test_request_normalises_tile_and_orbit():
    assert request(tile="t31tcj", relative_orbit=0) == maja.Period(TILE, dt.date(2023, 6, 1), dt.date(2023, 8, 31))
    assert request(relative_orbit=51, start="2015-06-23", end="2015-06-23").relative_orbit == 51


def test_missing_periods_are_the_gaps_longer_than_the_revisit_including_the_ends():
    start, end = dt.date(2023, 6, 1), dt.date(2023, 6, 30)
    dates = [dt.date(2023, 6, d) for d in (3, 8, 13, 25, 26)]
    assert maja.missing_periods(start, end, dates) == [(dt.date(2023, 6, 14), dt.date(2023, 6, 24))]
    assert maja.missing_periods(start, dt.date(2023, 7, 1), dates)[-1] == (dt.date(2023, 6, 27), dt.date(2023, 7, 1))
    assert maja.missing_periods(dt.date(2023, 5, 29), end, dates)[0] == (dt.date(2023, 5, 29), dt.date(2023, 6, 2))
    assert maja.missing_periods(start, end, []) == [(start, end)]
    regular = [start + dt.timedelta(days=5 * i) for i in range(6)]  # 1, 6, ... 26: every gap is the revisit
    assert maja.missing_periods(start, end, regular) == []


# ---------------------------------------------------------------------------------------------------------------
# MODE=geodes
# ---------------------------------------------------------------------------------------------------------------

def theia_products(count, start=dt.datetime(2023, 6, 1, 10, 30, tzinfo=dt.timezone.utc), skip=(), tiles=(TILE,)):
    products = replica.products(count, start=start, step=dt.timedelta(days=5), tiles=tiles, level="L2A")
    return [p for i, p in enumerate(products) if i not in skip]


@pytest.fixture
def geodes(http_server, tmp_path, monkeypatch):
    """A GEODES replica with THEIA L2A products every 5 days from 2023-06-01 for 31TCJ, none on 06-21 and 06-26,
    and the same dates for 31TDJ; its STAC root comes from SENTINEL2_GEODES_URL as for users."""
    products = theia_products(8, skip=(4, 5)) + theia_products(3, tiles=("31TDJ",))
    items, downloads = replica.theia_downloads(http_server, products, KEY, str(tmp_path / "served"))
    routes = replica.StacReplica(items, flavour="geodes").install(http_server, "/api/stac")
    monkeypatch.setenv(maja.GEODES_URL_VARIABLE, http_server.url("/api/stac"))
    return http_server, routes, downloads


def fetch(tmp_path, key=KEY, **kwargs):
    req = request(start="2023-06-01", end="2023-07-10", **kwargs)
    lines = []
    with http.new_session(retries=1, backoff=0) as session:
        result = maja.fetch_geodes(req, str(tmp_path / "out"), key, session=session, log=lines.append)
    return result, lines


def test_geodes_downloads_extracts_and_reports_dates_without_product(geodes, tmp_path):
    server, _, downloads = geodes
    result, lines = fetch(tmp_path)
    days = [dt.date(2023, 6, d) for d in (1, 6, 11, 16)] + [dt.date(2023, 7, 1), dt.date(2023, 7, 6)]
    assert result.dates == days and [p.date for p in result.products] == days
    assert all(p.tile == TILE and p.has_images for p in result.products)
    assert sorted(os.listdir(tmp_path / "out")) == sorted(p.name for p in result.products)  # zips removed
    assert result.missing == [(dt.date(2023, 6, 17), dt.date(2023, 6, 30))]  # 07-07..07-10: within the revisit
    assert "No product between 2023-06-17 and 2023-06-30 (14 days)." in result.report()
    body = json.loads(server.requests_to("/api/stac/search", "POST")[0].body)
    assert body["collections"] == ["THEIA_REFLECTANCE_SENTINEL2_L2A"]
    assert body["query"]["grid:code"] == {"contains": TILE}
    fetched = [r for r in server.requests if r.path.startswith("/api/download/")]
    assert len(fetched) == 6 and all(r.headers.get("X-API-Key") == KEY for r in fetched)
    assert not any(KEY in line for line in lines)


def test_geodes_sends_orbit_and_cloud_filters(geodes, tmp_path):
    server, _, _ = geodes
    result, _ = fetch(tmp_path, relative_orbit=8, max_cloud=50)
    query = json.loads(server.requests_to("/api/stac/search", "POST")[0].body)["query"]
    assert query["sat:relative_orbit"] == {"eq": 8} and query["eo:cloud_cover"] == {"lte": 50}
    assert [p.date for p in result.products] == [dt.date(2023, 6, 6)]  # the replica's only orbit 8, cloud 37 %


def test_geodes_products_already_there_are_not_downloaded_again(geodes, tmp_path):
    server, _, _ = geodes
    first, _ = fetch(tmp_path)
    server.requests.clear()
    second, _ = fetch(tmp_path)
    assert not [r for r in server.requests if r.path.startswith("/api/download/")]
    assert second.present == [p.name for p in first.products] and not second.downloaded
    assert second.products == first.products


def test_geodes_products_on_tape_are_reported_without_a_request(http_server, tmp_path, monkeypatch):
    items, routes = replica.theia_downloads(http_server, theia_products(3), KEY, str(tmp_path / "served"),
                                            offline=(1,))
    replica.StacReplica(items, flavour="geodes").install(http_server, "/api/stac")
    monkeypatch.setenv(maja.GEODES_URL_VARIABLE, http_server.url("/api/stac"))
    result, lines = fetch(tmp_path)
    on_tape = replica.geodes_name(items[1])
    assert result.offline == [on_tape] and "on tape" in result.failed[on_tape]
    assert not http_server.requests_to(routes[on_tape].path) and len(result.products) == 2
    assert result.dates == [dt.date(2023, 6, 1), dt.date(2023, 6, 6), dt.date(2023, 6, 11)]  # GEODES has it


def test_geodes_refused_key_is_one_sentence(geodes, tmp_path):
    server, _, _ = geodes
    with pytest.raises(ServiceError) as error:
        fetch(tmp_path, key="not-the-key")
    message = str(error.value)
    assert message.startswith("GEODES (127.0.0.1) refused the API key for the downloads (HTTP 403)")
    assert "authentication configuration (AUTH)" in message and "not-the-key" not in message
    assert "\n" not in message


def test_geodes_refusing_the_search_says_so(http_server, tmp_path, monkeypatch):
    replica.StacReplica([], flavour="geodes", api_key=KEY).install(http_server, "/api/stac")
    monkeypatch.setenv(maja.GEODES_URL_VARIABLE, http_server.url("/api/stac"))
    with pytest.raises(ServiceError) as error:
        fetch(tmp_path, key="not-the-key")
    assert "refused the API key (HTTP 401)" in str(error.value) and "AUTH" in str(error.value)


def test_geodes_without_a_key_stops_before_any_request(geodes, tmp_path):
    server, _, _ = geodes
    with pytest.raises(ParameterError) as error:
        fetch(tmp_path, key="")
    assert error.value.parameter == "AUTH" and not server.requests


def test_api_key_goes_to_geodes_only_not_to_a_redirect_target(http_server, tmp_path, monkeypatch):
    """GEODES may redirect a download to an object store: the key must not follow."""
    with TestServer() as store:
        items, routes = replica.theia_downloads(http_server, theia_products(1), KEY, str(tmp_path / "served"))
        route = routes[replica.geodes_name(items[0])]
        zipped = route.handler(type("R", (), {"headers": {"X-API-Key": KEY}})())[2]
        store.route("/bucket/product.zip", body=zipped)
        http_server.route(route.path, handler=lambda request: (302, {"Location": store.url("/bucket/product.zip")},
                                                               b""))
        replica.StacReplica(items, flavour="geodes").install(http_server, "/api/stac")
        monkeypatch.setenv(maja.GEODES_URL_VARIABLE, http_server.url("/api/stac"))
        result, _ = fetch(tmp_path)
        assert len(result.products) == 1
        assert http_server.requests_to(route.path)[0].headers.get("X-API-Key") == KEY
        assert store.requests and all(r.headers.get("X-API-Key") is None for r in store.requests)


def test_key_header_trusts_the_stac_host_and_geodes_portal_only():
    auth = maja.key_header("http://127.0.0.1:8080/api/stac", KEY)
    assert auth("http://127.0.0.1:8080/api/download/x") == {"X-API-Key": KEY}
    assert auth("https://geodes-portal.cnes.fr/api/download/x") == {"X-API-Key": KEY}
    assert auth("http://127.0.0.1:9999/x") == {} and auth("https://s3.datalake.cnes.fr/x") == {}
    assert auth("http://geodes-portal.cnes.fr/api/download/x") == {}  # never in clear text


# ---------------------------------------------------------------------------------------------------------------
# MODE=local: the time-series plan
# ---------------------------------------------------------------------------------------------------------------

def fake_products(first, gaps):
    """L1CProducts from ``first``, each ``gaps[i]`` days after the previous one."""
    days = [first]
    for gap in gaps:
        days.append(days[-1] + dt.timedelta(days=gap))
    return [maja.L1CProduct(f"/l1c/{d}", f"{d}.SAFE", dt.datetime.combine(d, dt.time(10, 30)), "S2A", 51, TILE)
            for d in days]


def modes(plan):
    return [mode for _, mode in plan]


def test_backward_initialisation_when_eight_products_exist():
    products = fake_products(dt.date(2023, 6, 1), [5] * 9)
    assert modes(maja.workplan(products)) == [maja.BACKWARD] + [maja.NOMINAL] * 9
    step = maja.next_step(products, 0, None)
    assert step.inputs == tuple(products[:8]) and step.product == products[0]


def test_init_when_fewer_than_eight():
    assert modes(maja.workplan(fake_products(dt.date(2023, 6, 1), [5] * 6))) == [maja.INIT] + [maja.NOMINAL] * 6


def test_a_long_gap_restarts_the_initialisation_and_bounds_the_backward_window():
    # after 2017-07-01 a gap of 15 days or more restarts; the backward window never spans such a gap
    products = fake_products(dt.date(2023, 6, 1), [5] * 5 + [15] + [5] * 8)
    assert modes(maja.workplan(products)) == [maja.INIT] + [maja.NOMINAL] * 5 + [maja.BACKWARD] + [maja.NOMINAL] * 8
    assert maja.next_step(products, 6, None).inputs == tuple(products[6:14])
    assert modes(maja.workplan(fake_products(dt.date(2023, 6, 1), [14]))) == [maja.INIT, maja.NOMINAL]


def test_before_july_2017_the_series_tolerates_30_days():
    assert modes(maja.workplan(fake_products(dt.date(2016, 6, 1), [25]))) == [maja.INIT, maja.NOMINAL]
    assert modes(maja.workplan(fake_products(dt.date(2016, 6, 1), [30]))) == [maja.INIT, maja.INIT]


def test_processed_dates_are_skipped_and_the_series_continues_from_them():
    products = fake_products(dt.date(2023, 6, 1), [5] * 3)
    existing = {products[1].date: maja.L2Product("/l2/x", "x", products[1].date, TILE, "S2A", (1, 0))}
    assert modes(maja.workplan(products, existing)) == [maja.INIT, "skip", maja.NOMINAL, maja.NOMINAL]
    assert maja.next_step(products, 2, existing[products[1].date]).previous == existing[products[1].date]


# ---------------------------------------------------------------------------------------------------------------
# MODE=local: runs with the stand-in
# ---------------------------------------------------------------------------------------------------------------

def test_series_with_the_standin_backward_then_nominal(site):
    series(site.input, dt.date(2023, 6, 1), 9)
    plan = site.plan()
    result = maja.run_local(plan, log=site.lines.append)
    runs = records(site.record)
    assert [r["mode"] for r in runs] == ["L2BACKWARD"] + ["L2NOMINAL"] * 8
    assert len(runs[0]["l1c"]) == 8 and runs[0]["l2"] is None
    assert [r["l2"] for r in runs[1:]] == [p.name for p in result.products[:-1]]  # each continues the previous
    assert [p.date for p in result.products] == [p.date for p in plan.products] and not result.failed
    assert all(maja.l2_product(p.path) == p and p.has_images for p in result.products)
    first = runs[0]
    assert first["argv"][first["argv"].index("--TileId") + 1] == TILE
    assert first["argv"][first["argv"].index("--mode") + 1] == "L2BACKWARD"
    assert first["threads"] and first["install_dir"] == os.path.dirname(STANDIN)
    logs = [os.path.basename(path) for path in result.logs.values()]
    assert sorted(os.listdir(site.output)) == sorted([p.name for p in result.products] + logs)  # no work folder
    with open(result.logs[plan.products[0].name]) as handle:
        log = handle.read()
    assert "--mode L2BACKWARD" in log and "Nominal end of computation" in log and "=== exit code 0" in log


def test_fewer_than_eight_products_start_with_init_and_zips_are_used(site):
    products = series(site.input, dt.date(2023, 6, 1), 3)
    zip_folder(products[1], products[1] + ".zip")
    shutil.rmtree(products[1])
    result = site.run()
    assert site.modes() == ["L2INIT", "L2NOMINAL", "L2NOMINAL"] and len(result.products) == 3
    assert not os.path.exists(os.path.join(site.output, maja.WORK_FOLDER))


def test_processed_dates_are_skipped_and_new_dates_continue_nominal(site):
    series(site.input, dt.date(2023, 6, 1), 3)
    first = site.run()
    series(site.input, dt.date(2023, 6, 16), 2)
    os.remove(site.record)
    second = site.run()
    runs = records(site.record)
    assert [r["mode"] for r in runs] == ["L2NOMINAL", "L2NOMINAL"]
    assert runs[0]["l2"] == first.products[-1].name
    assert second.skipped == first.products
    assert any("skipped" in line and first.products[0].name in line for line in site.lines)


def test_a_failed_date_is_reported_and_the_series_restarts(site, monkeypatch):
    series(site.input, dt.date(2023, 6, 1), 5)
    monkeypatch.setenv("STANDIN_MAJA_FAIL", "20230611")
    result = site.run()
    assert site.modes() == ["L2INIT", "L2NOMINAL", "L2NOMINAL", "L2INIT", "L2NOMINAL"]
    assert [p.date.day for p in result.products] == [1, 6, 16, 21]
    (name, reason), = result.failed.items()
    assert "20230611" in name and reason.startswith("MAJA (nominal) on 2023-06-11 exited with code 1")
    assert "angle grids are missing" in reason and result.logs[name] in reason
    assert any("starts a new initialisation" in line for line in site.lines)


def test_cloudy_and_not_valid_dates(site, monkeypatch):
    series(site.input, dt.date(2023, 6, 1), 3)
    monkeypatch.setenv("STANDIN_MAJA_CLOUDY", "20230601")
    monkeypatch.setenv("STANDIN_MAJA_NOTV", "20230606")
    result = site.run()
    assert [p.date.day for p in result.products] == [1, 11] and result.cloudy == [result.products[0]]
    assert maja.layers_of(result.products[0]) == {}
    assert "not valid (L2NOTV" in next(iter(result.failed.values()))
    assert site.modes() == ["L2INIT", "L2NOMINAL", "L2INIT"]


def test_cancel_stops_the_process_group_within_two_seconds(site, monkeypatch):
    series(site.input, dt.date(2023, 6, 1), 2)
    monkeypatch.setenv("STANDIN_MAJA_HANG", "20230601")
    monkeypatch.setenv("STANDIN_MAJA_IGNORE_TERM", "1")  # only SIGKILL stops it: the worst case
    plan = site.plan()
    cancel, outcome = threading.Event(), {}

    def work():
        try:
            maja.run_local(plan, is_cancelled=cancel.is_set)
        except Cancelled:
            outcome["cancelled"] = time.monotonic()

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 30
    while not records(site.record) and time.monotonic() < deadline:
        time.sleep(0.05)
    run = records(site.record)[0]
    assert alive(run["pid"]) and alive(run["child"]) and run["pgid"] == run["pid"]
    asked = time.monotonic()
    cancel.set()
    thread.join(10)
    assert outcome["cancelled"] - asked < 2.0
    assert not alive(run["pid"]) and not alive(run["child"])
    assert not maja.find_l2(site.output) and not os.path.exists(os.path.join(site.output, maja.WORK_FOLDER))
    assert len(records(site.record)) == 1  # the second date was not started


def test_other_tiles_orbits_and_dates_are_ignored_and_said(site):
    series(site.input, dt.date(2023, 6, 1), 2)
    l1c(site.input, dt.date(2023, 6, 3), tile="31TDJ")
    l1c(site.input, dt.date(2023, 6, 4), tile="32ULB")
    l1c(site.input, dt.date(2023, 6, 8), orbit=94)
    l1c(site.input, dt.date(2023, 10, 1))
    plan = site.plan(request(relative_orbit=51))
    assert [p.date.day for p in plan.products] == [1, 6]
    assert ("Ignored 2 product(s) of other tiles (31TDJ: 1, 32ULB: 1): MAJA processes one tile at a time."
            in plan.notes)
    assert "Ignored 1 product(s) outside the period." in plan.notes
    assert "Ignored 1 product(s) of other relative orbits." in plan.notes
    maja.run_local(plan, log=site.lines.append)
    assert all(TILE in name for run in records(site.record) for name in run["l1c"])


def test_products_from_before_april_2016_are_warned_about(site):
    series(site.input, dt.date(2016, 3, 25), 3)
    plan = site.plan(request(start="2016-03-01", end="2016-04-30"))
    assert any("2 product(s) are from before 2016-04-01" in note for note in plan.notes)


@pytest.mark.parametrize("change, parameter, words", [
    ("no_dtm", "DTM_FOLDER", "no MAJA DTM for tile 31TCJ in {dtm}: expected S2__TEST_AUX_REFDE2_T31TCJ_0001.HDR "
                             "with its S2__TEST_AUX_REFDE2_T31TCJ_0001.DBL.DIR folder"),
    ("dtm_without_data", "DTM_FOLDER", "has no S2__TEST_AUX_REFDE2_T31TCJ_0001.DBL.DIR folder"),
    ("no_dtm_folder", "DTM_FOLDER", "no DTM folder was given"),
    ("no_s2b_gipp", "GIPP_FOLDER", "incomplete for S2A, S2B: S2B_TEST_GIP_CKEXTL_L_ALLSITES_00001_20190626_21000101"
                                   ".EEF is missing"),
    ("no_gipp_folder", "GIPP_FOLDER", "no GIPP folder was given"),
    ("no_products", "INPUT_FOLDER", "there is no Level-1C product of tile 31TCJ between 2023-06-01 and 2023-08-31"),
    ("no_executable", "EXECUTABLE", "does not exist"),
])
def test_missing_inputs_are_one_sentence_before_any_run(site, change, parameter, words):
    series(site.input, dt.date(2023, 6, 1), 2)
    l1c(site.input, dt.date(2023, 6, 3), platform="S2B")
    kwargs = {}
    if change == "no_dtm":
        shutil.rmtree(site.dtm)
        os.makedirs(site.dtm)
    elif change == "dtm_without_data":
        shutil.rmtree(os.path.join(site.dtm, "S2__TEST_AUX_REFDE2_T31TCJ_0001.DBL.DIR"))
    elif change == "no_dtm_folder":
        kwargs["dtm_folder"] = None
    elif change == "no_s2b_gipp":
        for name in os.listdir(os.path.join(site.gipp, "SENTINEL2_NATIF")):
            if name.startswith("S2B"):
                path = os.path.join(site.gipp, "SENTINEL2_NATIF", name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    elif change == "no_gipp_folder":
        kwargs["gipp_folder"] = ""
    elif change == "no_products":
        shutil.rmtree(site.input)
        l1c(site.input, dt.date(2023, 6, 3), tile="31TDJ")
    elif change == "no_executable":
        kwargs["executable"] = os.path.join(site.dtm, "maja")
    with pytest.raises(ParameterError) as error:
        site.plan(**kwargs)
    message = str(error.value)
    assert error.value.parameter == parameter and words.format(dtm=site.dtm) in message and "\n" not in message
    assert not records(site.record) and not os.path.exists(os.path.join(site.output, maja.WORK_FOLDER))


def test_user_configuration_from_the_gipp_folder_wins(site):
    series(site.input, dt.date(2023, 6, 1), 1)
    userconf = os.path.join(site.gipp, "SENTINEL2_NATIF", "userconf")
    maja.write_userconf(userconf, threads=3)
    site.run()
    argv = records(site.record)[0]["argv"]
    assert argv[argv.index("-ucs") + 1] == userconf and records(site.record)[0]["threads"] == 3


# ---------------------------------------------------------------------------------------------------------------
# Finding MAJA, and the layers of a product
# ---------------------------------------------------------------------------------------------------------------

def fake_maja(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\n")
    os.chmod(path, 0o755)
    return path


def test_executable_search_order(tmp_path):
    home = str(tmp_path / "home")
    on_path = fake_maja(str(tmp_path / "path" / "maja"))
    maja_home = fake_maja(str(tmp_path / "majahome" / "bin" / "maja"))
    old = fake_maja(os.path.join(home, "maja", "maja", "4.2.0", "bin", "maja"))
    new = fake_maja(os.path.join(home, "maja", "maja", "4.10.1", "bin", "maja"))
    environ = {"PATH": str(tmp_path / "path"), "MAJA_HOME": str(tmp_path / "majahome")}
    assert maja.find_executable(STANDIN, "/elsewhere", environ, home) == STANDIN
    assert maja.find_executable(None, maja_home, environ, home) == maja_home
    assert maja.find_executable(None, None, environ, home) == on_path
    assert maja.find_executable(None, None, {"MAJA_HOME": str(tmp_path / "majahome")}, home) == maja_home
    assert maja.find_executable(None, None, {}, home) in (new, "/opt/maja/bin/maja")  # /opt wins if installed
    assert old != new and maja.find_executable(os.path.join(home, "maja"), None, {}, home) == new
    assert maja.install_dir(maja_home) == str(tmp_path / "majahome")


def test_executable_not_found_says_where_it_looked_and_how_to_install(tmp_path):
    if os.path.exists("/opt/maja"):
        pytest.skip("a MAJA is installed in /opt/maja on this machine")
    with pytest.raises(ParameterError) as error:
        maja.find_executable(None, None, {"PATH": str(tmp_path)}, str(tmp_path / "home"))
    message = str(error.value)
    assert "PATH" in message and "/opt/maja" in message and maja.INSTALL_URL in message and "MODE=geodes" in message


def test_layers_are_a_true_colour_vrt_and_the_cloud_mask(site):
    from osgeo import gdal

    series(site.input, dt.date(2023, 6, 1), 1)
    product = site.run().products[0]
    layers = maja.layers_of(product)
    assert layers["CLM"] == product.cloud_mask
    dataset = gdal.Open(layers["FRE"])
    assert dataset.RasterCount == 3 and dataset.GetRasterBand(1).GetNoDataValue() == maja.NODATA
    red = gdal.Open(product.band("FRE", "B4")).ReadAsArray()
    assert (dataset.GetRasterBand(1).ReadAsArray() == red).all()
    assert maja.reflectance_scale(product) == 10000.0
    assert maja.layers_of(product)["FRE"] == layers["FRE"]  # built once


def test_module_does_not_import_qgis():
    import subprocess
    import sys

    code = ("import sys; import sentinel2_pipeline.plugin.engine.maja; "
            "sys.exit(any(m == 'qgis' or m.startswith('qgis.') for m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "build", "pluginpath"))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
