"""The engine of sentinel2:download (plugin.engine.download and its cdse, stac and geodes sources) against real
local servers: an identity service with short-lived tokens, OData download hosts that redirect, serve zips of
realistic synthetic .SAFE products (the real ESA metadata of ../shared/fixtures, as in test_safe.py), drop
connections and send wrong bytes, and a file server with HTTP Range support serving real COGs made with GDAL.
"""

import datetime as dt
import hashlib
import io
import json
import os
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
from conftest import tracked_session
from replicas import cogs, odata
from replicas import stac as stac_replica
from replicas.identity import Identity
from servers import faults, http_server  # noqa: F401  (the fixture is found by name)
from test_safe import make_l1c, zip_folder
from test_transfer import CountingServer

from sentinel2_pipeline.plugin.engine import download, safe
from sentinel2_pipeline.plugin.engine.catalogs import Credentials
from sentinel2_pipeline.plugin.engine.catalogs import cdse as cdse_catalogue
from sentinel2_pipeline.plugin.engine.catalogs import stac as stac_catalogue
from sentinel2_pipeline.plugin.engine.errors import ParameterError
from sentinel2_pipeline.plugin.engine.footprints import Footprint
from sentinel2_pipeline.plugin.engine.sources import Options
from sentinel2_pipeline.plugin.engine.sources import cdse as cdse_source

USER, PASSWORD = "alice@example.org", "pa55-W0rd!cdse"
ACCOUNT = Credentials(USER, PASSWORD)
TILE = "31TCJ"
MB = 1_000_000
PRODUCT_FOLDERS = ["AUX_DATA", "HTML", "rep_info"]


# ---- products: synthetic SAFEs in the real layout, zipped as the Data Space delivers them -----------------------


def safe_zip(folder, name, pad=0, strip=False, seed=0, origin=None):
    """The zip of an L1C product named ``name`` (make_l1c's real metadata); ``pad`` random bytes more in its B02
    image (size for slow transfers); ``strip`` drops the empty folders copies from buckets lose."""
    root = make_l1c(str(folder), name, origin)
    if pad:
        band = next(p for p in safe.inspect(root).band_files.values() if p.endswith("_B02.jp2"))
        with open(band, "ab") as stream:
            stream.write(np.random.default_rng(seed).bytes(pad))
    if strip:
        for sub in PRODUCT_FOLDERS:
            shutil.rmtree(os.path.join(root, sub))
    with open(zip_folder(root, str(folder / (name + ".zip"))), "rb") as stream:
        data = stream.read()
    shutil.rmtree(root)
    return data


def catalogue_products(count, start=dt.date(2023, 6, 1)):
    """OData products of one tile, one a day, in the service's JSON shape."""
    return odata.generate_products([TILE], start, start + dt.timedelta(days=count - 1), every_days=1)[:count]


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    """{product Id: (listed product, zip bytes)}: 8 products of ~1.6 MB, then variants used by single tests."""
    folder = tmp_path_factory.mktemp("zips")
    made = {}
    for index, product in enumerate(catalogue_products(10)):
        body = safe_zip(folder, product["Name"], pad=1_500_000 if index < 8 else 0, strip=index >= 8, seed=index)
        made[product["Id"]] = (odata.with_content(product, body), body)
    return made


class Cdse:
    """A download host (the configured SENTINEL2_CDSE_DOWNLOAD_URL) and an identity service on another port."""

    def __init__(self, monkeypatch, lifetime=600.0):
        self.server = CountingServer().start()
        self.identity_server = CountingServer().start()
        self.identity = Identity(self.identity_server, USER, PASSWORD, lifetime=lifetime)
        self.root = self.server.url("/odata/v1")
        self.statuses = {}  # path -> statuses answered
        self.before = {}  # path -> function(request) run before the token check
        monkeypatch.setenv("SENTINEL2_CDSE_DOWNLOAD_URL", self.root)
        monkeypatch.setenv("SENTINEL2_CDSE_TOKEN_URL", self.identity.url)

    def stop(self):
        self.server.stop()
        self.identity_server.stop()

    def serve(self, product, body, *planned):
        """Serve ``body`` as the product's zip to requests with a live token; returns its footprint."""
        path = odata.value_path(product)

        def answer(request):
            if path in self.before:
                self.before[path](request)
            refused = self.identity.check(request.headers.get("Authorization"))
            status = 401 if refused else 200
            self.statuses.setdefault(path, []).append(status)
            if refused:
                return 401, {"Content-Type": "application/json"}, b'{"detail": "Expired signature!"}'
            return 200, {"Content-Type": "application/zip"}, body

        self.server.route(path, handler=answer).fail(*planned)
        return cdse_catalogue.parse_product(product, self.root)

    def requests(self, product):
        return self.server.requests_to(odata.value_path(product))


@pytest.fixture
def cdse(monkeypatch):
    world = Cdse(monkeypatch)
    yield world
    world.stop()


def session(**kwargs):
    return tracked_session(**{"timeout": 10, **kwargs})


def run(footprints, folder, source="auto", options=None, **kwargs):
    logs = []
    summary = download.download(footprints, source, folder, options or Options(credentials=ACCOUNT),
                                kwargs.pop("session", None) or session(), log=logs.append, **kwargs)
    return summary, logs


def one_sentence(text):
    return text.endswith(".") and "\n" not in text and "Traceback" not in text


def listed(zips, index):
    return list(zips.values())[index]


# ---- cdse: one sign-in per batch, refreshes, 401 mid-download --------------------------------------------------


def test_cdse_batch_signs_in_once_refreshes_before_expiry_and_resumes_after_a_401(zips, monkeypatch, tmp_path):
    world = Cdse(monkeypatch, lifetime=2.0)  # tokens live 2 s; each download takes about 1 s
    try:
        products = [listed(zips, i) for i in range(8)]
        third = products[2][0]
        first_answers = [faults.drop_mid(700_000) if i == 2 else faults.slow(0.04, 64 * 1024) for i in range(8)]
        footprints = [world.serve(p, body, first) for (p, body), first in zip(products, first_answers)]
        revoked = []

        def logout_once(request):  # the resume of the third product finds every token revoked
            if request.headers.get("Range") and not revoked:
                revoked.append(True)
                world.identity.revoke_access()

        world.before[odata.value_path(third)] = logout_once
        summary, logs = run(footprints, tmp_path, options=Options(credentials=ACCOUNT, parallel=2))

        assert [r.status for r in summary.results] == ["downloaded"] * 8
        assert world.identity.grants.count("password") == 1  # one sign-in for the whole batch
        # One after the 401, and before expiry about every 1.5 s of the ~4 s batch: not one per request.
        assert 2 <= world.identity.grants.count("refresh_token") <= 6
        assert "expired" not in world.identity.refusals  # refreshed before the server would refuse
        assert world.identity.refusals.count("revoked") >= 1
        assert [r.headers.get("Range") for r in world.requests(third)] == [None, "bytes=700000-", "bytes=700000-"]
        assert world.statuses[odata.value_path(third)] == [200, 401, 200]
        for product, _ in products:
            assert safe.check(str(tmp_path / product["Name"])) == []
            assert not (tmp_path / (product["Name"][:-5] + ".zip")).exists()  # deleted once extracted and checked
        assert summary.products == [str(tmp_path / p["Name"]) for p, _ in products]
        text = "\n".join(logs)
        assert "1 sign-in(s)" in text and not any(token in text for token in world.identity.tokens())
    finally:
        world.stop()


def test_a_dead_refresh_token_leads_to_a_new_password_sign_in(cdse):
    now = [0.0]
    cdse.identity.refresh_lifetime = 0.0  # every refresh token is already dead at the server
    token = cdse_source.Token(session(), cdse.identity.url, USER, PASSWORD, clock=lambda: now[0])
    first = token.auth(cdse.root + "/Products")
    now[0] += 10_000  # past the access token's lifetime
    second = token.auth(cdse.root + "/Products")
    assert first != second and cdse.identity.grants == ["password", "refresh_token", "password"]
    assert (token.sign_ins, token.refreshes) == (2, 0)


def test_wrong_password_is_one_sentence_for_the_batch_and_tried_once(zips, cdse, tmp_path):
    footprints = [cdse.serve(*listed(zips, i)) for i in range(3)]
    with pytest.raises(ParameterError) as raised:
        run(footprints, tmp_path, options=Options(credentials=Credentials(USER, "wrong")))
    assert str(raised.value) == (
        "AUTH: the Copernicus Data Space identity service (127.0.0.1) refused the username or password (HTTP 401: "
        "Invalid user credentials); check the authentication configuration.")
    assert cdse.identity.grants == ["password"] and cdse.server.requests == []


def test_missing_credentials_are_refused_before_any_request(zips, cdse, tmp_path):
    footprints = [cdse.serve(*listed(zips, 0))]
    with pytest.raises(ParameterError) as raised:
        run(footprints, tmp_path / "out", options=Options())
    assert str(raised.value) == ("AUTH: downloads from the Copernicus Data Space need an account: choose an "
                                 "authentication configuration of type Basic with its username and password.")
    assert cdse.server.requests == [] and cdse.identity.grants == [] and not (tmp_path / "out").exists()


# ---- cdse: the token only where it belongs ---------------------------------------------------------------------


def test_redirect_to_another_host_gets_no_token(zips, cdse, tmp_path):
    product, body = listed(zips, 0)
    with CountingServer() as zipper:  # another host:port, like zipper.dataspace.copernicus.eu
        zipper.route("/zipper/product.zip", body)
        cdse.server.route(odata.value_path(product), status=301,
                          headers={"Location": zipper.url("/zipper/product.zip")})
        footprint = cdse_catalogue.parse_product(product, cdse.root)
        summary, _ = run([footprint], tmp_path)
        assert summary.results[0].status == "downloaded"
        assert cdse.requests(product)[0].headers["Authorization"].startswith("Bearer eyJ-")
        assert "Authorization" not in zipper.requests_to("/zipper/product.zip")[0].headers


@pytest.mark.parametrize("url, allowed", [
    ("https://zipper.dataspace.copernicus.eu/odata/v1/Products(x)/$value", True),
    ("https://download.dataspace.copernicus.eu/odata/v1/Products(x)/$value", True),
    ("http://zipper.dataspace.copernicus.eu/odata/v1/Products(x)/$value", False),  # never in clear text
    ("https://dataspace.copernicus.eu.example.com/x", False),
    ("https://example.com/.dataspace.copernicus.eu/x", False),
    ("https://s3.example.com/eodata/x.zip?X-Amz-Signature=abc", False),
])
def test_trusted_hosts(url, allowed, monkeypatch):
    monkeypatch.delenv("SENTINEL2_CDSE_DOWNLOAD_URL", raising=False)
    monkeypatch.delenv("SENTINEL2_CDSE_TOKEN_URL", raising=False)
    assert cdse_source.trusted(url) is allowed


def test_configured_download_host_is_trusted_only_on_its_own_port(monkeypatch):
    monkeypatch.setenv("SENTINEL2_CDSE_DOWNLOAD_URL", "http://127.0.0.1:8001/odata/v1")
    assert cdse_source.trusted("http://127.0.0.1:8001/odata/v1/Products(x)/$value")
    assert not cdse_source.trusted("http://127.0.0.1:8002/zipper/x")


# ---- cdse: offline, checksums, products from other catalogues ---------------------------------------------------


def test_offline_products_are_reported_not_failed_and_not_requested(zips, cdse, tmp_path):
    (online, body), (offline, _) = listed(zips, 8), listed(zips, 9)
    footprints = [cdse.serve(online, body), cdse.serve(dict(offline, Online=False), b"never sent")]
    summary, logs = run(footprints, tmp_path)
    assert [r.status for r in summary.results] == ["downloaded", "offline"]
    assert summary.failed == [] and cdse.requests(offline) == []
    assert "1 of 2 products are offline (long-term archive): they are reported, not counted as failures." in logs
    assert summary.offline[0].reason.startswith(f"{offline['Name'][:-5]} is offline at Copernicus Data Space")


def test_wrong_checksum_fails_with_a_sentence_and_leaves_nothing(zips, cdse, tmp_path):
    product, body = listed(zips, 8)
    wrong = json.loads(json.dumps(product))
    wrong["Checksum"][0]["Value"] = hashlib.md5(b"other bytes").hexdigest()
    summary, _ = run([cdse.serve(wrong, body)], tmp_path)
    [result] = summary.failed
    assert "checksum mismatch (MD5 expected" in result.reason and one_sentence(result.reason)
    assert result.reason.startswith(product["Name"][:-5] + ": ")
    assert os.listdir(tmp_path) == [] and len(cdse.requests(product)) == 3  # three copies, then it gives up


def test_sentinelhub_footprints_are_found_by_name_in_odata(zips, monkeypatch, tmp_path):
    product, body = listed(zips, 8)
    replica = odata.odata_test_server(odata.ODataReplica([product]))
    identity_server = CountingServer().start()
    try:
        identity = Identity(identity_server, USER, PASSWORD)
        monkeypatch.setenv("SENTINEL2_CDSE_DOWNLOAD_URL", replica.odata_url)
        monkeypatch.setenv("SENTINEL2_CDSE_TOKEN_URL", identity.url)
        replica.route(odata.value_path(product), body)
        hub = Footprint(id=product["Name"], name=product["Name"], provider="sentinelhub", geometry=None,
                        sensing_start=dt.datetime(2023, 6, 1, tzinfo=dt.timezone.utc),
                        download_url="s3://EODATA/Sentinel-2/MSI/L1C/2023/06/01/" + product["Name"])
        summary, logs = run([hub], tmp_path)
        assert summary.results[0].status == "downloaded", summary.results[0].reason
        assert any(f"Name eq '{product['Name']}'" in dict(q).get("$filter", "") for q in replica.raw_queries)
        assert "Copernicus Data Space: looking up 1 product(s) by name at 127.0.0.1." in logs
    finally:
        replica.stop()
        identity_server.stop()


# ---- after the download: extraction, repair, zip slip ------------------------------------------------------------


def test_extraction_repairs_the_folders_sen2cor_needs_and_deletes_the_zip(zips, cdse, tmp_path):
    product, body = listed(zips, 8)  # zipped without AUX_DATA, HTML, rep_info, as copied from a bucket
    assert not any(name.split("/")[1] in PRODUCT_FOLDERS for name in zipfile.ZipFile(io.BytesIO(body)).namelist()
                   if name.count("/") > 1)
    summary, logs = run([cdse.serve(product, body)], tmp_path)
    path = tmp_path / product["Name"]
    assert summary.products == [str(path)] and safe.check(str(path)) == []
    assert all((path / sub).is_dir() for sub in PRODUCT_FOLDERS)
    assert f"{product['Name'][:-5]}: created the empty folders Sen2Cor needs: AUX_DATA, HTML, rep_info." in logs
    assert sorted(os.listdir(tmp_path)) == [product["Name"]]


def test_unzip_false_keeps_the_verified_zip(zips, cdse, tmp_path):
    product, body = listed(zips, 8)
    summary, _ = run([cdse.serve(product, body)], tmp_path, unzip=False)
    zip_path = tmp_path / (product["Name"][:-5] + ".zip")
    assert summary.products == [str(zip_path)] and zip_path.read_bytes() == body
    assert os.listdir(tmp_path) == [zip_path.name]


def test_zip_slip_archive_fails_and_writes_nothing_outside(cdse, tmp_path):
    product = catalogue_products(1)[0]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(product["Name"] + "/manifest.safe", "<xfdu:XFDU/>")
        archive.writestr("../escaped.txt", "owned")
    body = buffer.getvalue()
    out = tmp_path / "out"
    summary, _ = run([cdse.serve(odata.with_content(product, body), body)], out)
    [result] = summary.failed
    assert result.reason == (f"{product['Name'][:-5]}: The archive {product['Name'][:-5]}.zip was not extracted "
                             f"because its entry '../escaped.txt' leads outside the target folder with '..'.")
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == [product["Name"][:-5] + ".zip"]


def test_rerun_skips_complete_products_without_any_request(zips, cdse, tmp_path):
    pairs = [listed(zips, 8), listed(zips, 9)]
    footprints = [cdse.serve(p, body) for p, body in pairs]
    run(footprints, tmp_path)
    before = (len(cdse.server.requests), len(cdse.identity.grants))
    summary, logs = run(footprints, tmp_path)
    assert [r.status for r in summary.results] == ["skipped", "skipped"]
    assert (len(cdse.server.requests), len(cdse.identity.grants)) == before  # no download, no sign-in
    assert logs[-1] == f"Skipped {pairs[1][0]['Name'][:-5]}: already complete in {tmp_path / pairs[1][0]['Name']}."


def test_rerun_replaces_a_damaged_product(zips, cdse, tmp_path):
    product, body = listed(zips, 8)
    footprint = cdse.serve(product, body)
    run([footprint], tmp_path)
    shutil.rmtree(tmp_path / product["Name"] / "GRANULE")
    summary, _ = run([footprint], tmp_path)
    assert summary.results[0].status == "downloaded" and safe.check(str(tmp_path / product["Name"])) == []


# ---- bad input --------------------------------------------------------------------------------------------------


def test_no_footprints_is_one_sentence(tmp_path):
    with pytest.raises(ParameterError, match=r"^INPUT: there are no footprints to download \(the layer is empty"):
        run([], tmp_path)


def test_unknown_catalogue_fails_only_its_own_product(zips, cdse, tmp_path):
    product, body = listed(zips, 8)
    stranger = Footprint(id="x", name="S2A_MSIL1C_20230601T103631_N0509_R008_T31TCJ_20230601T130000.SAFE",
                         provider="planetary-computer", geometry=None, sensing_start=None)
    summary, _ = run([stranger, cdse.serve(product, body)], tmp_path)
    assert [r.status for r in summary.results] == ["failed", "downloaded"]
    assert summary.failed[0].reason == (
        "S2A_MSIL1C_20230601T103631_N0509_R008_T31TCJ_20230601T130000: its catalogue ('planetary-computer') has no "
        "download source for SOURCE=auto; choose SOURCE (cdse, aws, dhus or stac).")


def test_unwritable_output_folder_is_one_sentence_before_any_request(zips, cdse, tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(ParameterError) as raised:
        run([cdse.serve(*listed(zips, 8))], tmp_path / "file" / "out")
    assert str(raised.value).startswith(f"OUTPUT_FOLDER: cannot create the folder {tmp_path / 'file' / 'out'} (")
    assert one_sentence(str(raised.value)) and cdse.server.requests == [] and cdse.identity.grants == []


def test_products_larger_than_the_free_space_are_refused_before_any_request(zips, cdse, tmp_path):
    # The real free space of the real disk, against what the catalogue says: 2 PB cannot fit here.
    product, body = listed(zips, 8)
    huge = dict(product, ContentLength=2 * 10**15)
    with pytest.raises(ParameterError) as raised:
        run([cdse.serve(huge, body)], tmp_path)
    assert str(raised.value).startswith("OUTPUT_FOLDER: the downloads need 4000000.0 GB but only ")
    assert one_sentence(str(raised.value)) and cdse.server.requests == [] and cdse.identity.grants == []


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A real 1 MB file system (tmpfs). Mounting needs root, so elsewhere this is skipped; the pre-check against
    the free space is tested on the real disk above."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_disk_that_fills_up_fails_the_product_with_a_sentence_and_keeps_the_part(zips, cdse, tiny_filesystem):
    product, body = listed(zips, 0)  # 1.6 MB, and the catalogue says 0 ("unknown"): no pre-check can catch it
    summary, _ = run([cdse.serve(dict(product, ContentLength=0), body)], tiny_filesystem)
    name = product["Name"][:-5]
    part = tiny_filesystem / (name + ".zip.part")
    assert summary.failed[0].reason == f"{name}: could not write {part} (No space left on device)."
    assert 0 < part.stat().st_size < len(body)  # resumable once there is room


# ---- stac: per-band files, AOI windows over range requests -------------------------------------------------------


def utm_square(x0, y0, side):
    """A ``side`` metre square of UTM 31N as EPSG:4326 WKB (the AOI the algorithm would pass)."""
    return cogs.utm_rectangle(x0, y0, x0 + side, y0 + side)


@pytest.fixture(scope="module")
def cog_folder(tmp_path_factory):
    """B04 and B08 as 10980 px COGs (one cached file under two names), B01 as a 1830 px 60 m COG."""
    folder = tmp_path_factory.mktemp("cogs")
    big = cogs.band_cog("B04")
    for name in ("B04.tif", "B08.tif"):
        os.symlink(big, folder / name)
    os.symlink(cogs.band_cog("B01", size=1830, pixel=60.0), folder / "B01.tif")
    return folder


def cog_footprint(server, bands=("B04", "B08"), name="S2B_MSIL2A_20230601T103629_N0509_R008_T31TCJ_20230601T134110"):
    keys = {"B04": "red", "B08": "nir", "B01": "coastal"}
    assets = {keys[band]: server.url(f"{band}.tif") for band in bands}
    return Footprint(id=name, name=name + ".SAFE", provider="earth-search", geometry=None,
                     sensing_start=dt.datetime(2023, 6, 1, tzinfo=dt.timezone.utc), extra={"assets": assets})


def clear_gdal_cache():
    from osgeo import gdal

    gdal.VSICurlClearCache()  # each test counts its own bytes


def test_stac_with_aoi_reads_a_small_share_and_writes_the_right_window(cog_folder, tmp_path):
    import rasterio

    clear_gdal_cache()
    aoi = utm_square(340_000, 4_850_000, 10_000)  # 10 km x 10 km inside the 110 km tile
    with cogs.RangeFileServer(str(cog_folder)) as server:
        footprint = cog_footprint(server)
        options = Options(bands=("B4", "B08"), aoi_wkb=aoi)
        summary, logs = run([footprint], tmp_path, options=options)
        whole = 2 * os.path.getsize(cog_folder / "B04.tif")
        assert summary.results[0].status == "downloaded", summary.results[0].reason
        assert server.sent <= 0.05 * whole  # the bench measures the share; here it must stay below the target
        assert all(r[2] for r in server.requests if r[0] == "GET")  # only range requests
    product = tmp_path / footprint.name[:-5]
    assert summary.products == [str(product)] and sorted(os.listdir(product)) == ["B04.tif", "B08.tif"]
    with rasterio.open(product / "B04.tif") as clip, rasterio.open(cog_folder / "B04.tif") as source:
        assert clip.crs == source.crs and clip.res == (10.0, 10.0)
        left, bottom, right, top = clip.bounds
        assert left <= 340_000 and right >= 350_000 and bottom <= 4_850_000 and top >= 4_860_000
        assert 350_000 - 340_000 <= right - left <= 10_600  # the AOI's lon/lat box, no more
        assert (left - 300_000) % 10 == 0 and (4_900_020 - top) % 10 == 0  # on the band's own pixel grid
        window = source.window(left, bottom, right, top)
        expected = source.read(1, window=window)
        got = clip.read(1)
        inside = got != 0
        assert inside.mean() > 0.9 and (got[inside] == expected[inside]).all()
        assert got[0, 0] == 0 and got[-1, -1] == 0  # the corners of the box lie outside the AOI polygon
        assert clip.tags()["S2_AOI"]


def test_stac_rerun_with_the_same_aoi_skips_and_another_aoi_replaces(cog_folder, tmp_path):
    clear_gdal_cache()
    with cogs.RangeFileServer(str(cog_folder)) as server:
        footprint = cog_footprint(server, bands=("B01",))
        options = Options(bands=("B01",), aoi_wkb=utm_square(340_000, 4_850_000, 10_000))
        run([footprint], tmp_path, options=options)
        server.reset()
        summary, _ = run([footprint], tmp_path, options=options)
        assert summary.results[0].status == "skipped" and server.requests == []
        moved = Options(bands=("B01",), aoi_wkb=utm_square(360_000, 4_850_000, 5_000))
        summary, _ = run([footprint], tmp_path, options=moved)
        assert summary.results[0].status == "downloaded" and server.requests


def test_stac_without_range_support_downloads_the_whole_band_and_clips_it(cog_folder, tmp_path):
    import rasterio

    clear_gdal_cache()
    with cogs.RangeFileServer(str(cog_folder), ranges=False) as server:
        footprint = cog_footprint(server, bands=("B01",))
        options = Options(bands=("B01",), aoi_wkb=utm_square(340_000, 4_850_000, 10_000))
        summary, logs = run([footprint], tmp_path, options=options)
        assert summary.results[0].status == "downloaded", summary.results[0].reason
        size = os.path.getsize(cog_folder / "B01.tif")
        assert server.sent == size  # the whole file once: "Accept-Ranges: none" spared the probing GET
    assert any("ignores HTTP range requests, so whole band files are downloaded" in line for line in logs)
    product = tmp_path / footprint.name[:-5]
    assert os.listdir(product) == ["B01.tif"]  # the whole copy is gone
    with rasterio.open(product / "B01.tif") as clip:
        assert clip.res == (60.0, 60.0) and 160 <= clip.width <= 180


def test_stac_without_aoi_fetches_whole_assets_verified_from_the_item(cog_folder, http_server, tmp_path):
    clear_gdal_cache()
    band = (cog_folder / "B01.tif").read_bytes()
    product = stac_replica.products(1, level="L2A")[0]
    with cogs.RangeFileServer(str(cog_folder)) as files:
        item = stac_replica.earth_search_item(product, "sentinel-2-c1-l2a")
        item["assets"] = {"coastal": {"href": files.url("B01.tif"), "file:size": len(band),
                                      "file:checksum": "1220" + hashlib.sha256(band).hexdigest()}}
        http_server.route("/items/one", json.dumps(item), headers={"Content-Type": "application/geo+json"})
        footprint = stac_catalogue.item_footprint(item, "earth-search", "L2A")
        footprint.extra, footprint.download_url = {}, http_server.url("/items/one")  # as read from a layer
        summary, _ = run([footprint], tmp_path, options=Options(bands=("B1",)))
    assert summary.results[0].status == "downloaded", summary.results[0].reason
    assert (tmp_path / product.name / "B01.tif").read_bytes() == band


def test_stac_requester_pays_assets_point_at_the_aws_source(tmp_path):
    item = stac_replica.earth_search_item(stac_replica.products(1)[0], "sentinel-2-l1c")
    footprint = stac_catalogue.item_footprint(item, "earth-search", "L1C")
    summary, _ = run([footprint], tmp_path, options=Options(bands=("B04",)))
    [result] = summary.failed
    assert result.reason.startswith(footprint.name[:-5] + ": its band files are in a requester-pays bucket (s3://")
    assert result.reason.endswith("which cannot be read over HTTP; download it with SOURCE=aws.")


def test_stac_bad_band_is_one_sentence(tmp_path):
    with pytest.raises(ParameterError, match=r"^BANDS: 'B13' is not a Sentinel-2 band; use B01, B02"):
        run([cog_footprint(None, bands=())], tmp_path, options=Options(bands=("B13",)))


# ---- geodes ------------------------------------------------------------------------------------------------------


def test_geodes_sends_the_api_key_only_to_its_own_host(zips, http_server, tmp_path):
    product, body = listed(zips, 8)
    with CountingServer() as storage:
        storage.route("/object.zip", body)
        http_server.route("/download/urn/files/abc", status=302, headers={"Location": storage.url("/object.zip")})
        footprint = Footprint(id="urn", name=product["Name"][:-5], provider="geodes", geometry=None,
                              sensing_start=None, size_bytes=len(body), online=True,
                              download_url=http_server.url("/download/urn/files/abc"),
                              checksum="MD5:" + hashlib.md5(body).hexdigest())
        offline = Footprint(id="tape", name="S2A_MSIL1C_20230602T103631_N0509_R008_T31TCJ_20230602T130000",
                            provider="geodes", geometry=None, sensing_start=None, online=False,
                            download_url=http_server.url("/download/tape"))
        summary, _ = run([footprint, offline], tmp_path, options=Options(credentials=Credentials(api_key="K3Y")))
        assert [r.status for r in summary.results] == ["downloaded", "offline"]
        assert http_server.requests_to("/download/urn/files/abc")[0].headers["X-API-Key"] == "K3Y"
        assert "X-API-Key" not in storage.requests_to("/object.zip")[0].headers
        assert http_server.requests_to("/download/tape") == []
    assert safe.check(str(tmp_path / product["Name"])) == []

