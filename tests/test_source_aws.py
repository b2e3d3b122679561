"""The ``aws`` download source: real sentinelhub-py (``AwsProductRequest``, ``safe_format=True``) and real boto3
against moto's standalone S3 server on 127.0.0.1, holding one Level-1C product in the layout of the bucket
``sentinel-s2-l1c`` (the keys sentinelhub 3.x requests, read from ``sentinelhub/aws/*.py``).

Requests go:  source --S3 (SENTINEL2_AWS_S3_ENDPOINT)--> requester-pays gate --> moto
              source --HTTP (SENTINEL2_AWS_METADATA_URL)---------------------> moto (public-read metadata objects)
moto does not enforce requester-pays buckets, so the gate does what AWS does: it refuses (403 AccessDenied) every
S3 request without ``x-amz-request-payer: requester`` and, for the access-denied test, every request signed with
the key ``DENIED``; it records what it relays.
"""

import gc
import http.client
import http.server
import json
import os
import shutil
import sys
import threading
import time
import warnings

import pytest
import s3server
from osgeo import gdal

from sentinel2_pipeline.plugin.engine import safe
from sentinel2_pipeline.plugin.engine.catalogs import Credentials
from sentinel2_pipeline.plugin.engine.errors import Cancelled, MissingDependency, ParameterError
from sentinel2_pipeline.plugin.engine.footprints import Footprint, parse_product_name
from sentinel2_pipeline.plugin.engine.sources import Options, aws

boto3 = pytest.importorskip("boto3", reason="the aws source needs boto3 (make deps installs it)")
pytest.importorskip("moto", reason="moto's S3 server plays the bucket (make deps installs it)")

# sentinelhub builds a new boto3 client for every file and never closes it: its sockets are left to the garbage
# collector. Not ours to fix, and not worth a screenful of warnings per run.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")

BUCKET = "sentinel-s2-l1c"
KEYS = Credentials("AKIAEXAMPLEKEY000001", "example-secret-access-key")
BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
REPORTS = ("FORMAT_CORRECTNESS", "GENERAL_QUALITY", "GEOMETRIC_QUALITY", "RADIOMETRIC_QUALITY", "SENSOR_QUALITY")


class Product:
    """One L1C product as the bucket holds it (names from a real 2024 product of tile 27VWK, baseline 05.10)."""

    def __init__(self, name, tile="27VWK", absent=()):
        self.name = name
        parsed = parse_product_name(name)
        self.tile, self.sensing = tile, parsed["sensing_start"]
        day = f"{self.sensing.year}/{self.sensing.month}/{self.sensing.day}"
        self.product_path = f"products/{day}/{name}"
        self.tile_path = f"tiles/{int(tile[:2])}/{tile[2]}/{tile[3:]}/{day}/0"
        self.datastrip_path = f"{self.product_path}/datastrip/0"
        stamp, generation = name.split("_")[2], name.split("_")[6]
        self.datastrip_id = f"{name[:3]}_OPER_MSI_L1C_DS_2BPS_{generation}_S{stamp[:9]}131359_N05.10"
        self.granule_id = f"{name[:3]}_OPER_MSI_L1C_TL_2BPS_{generation}_A036143_T{tile}_N05.10"
        self.absent = set(absent)  # keys left out of the bucket

    # What the rebuilt .SAFE must be called (ESA's names, which Sen2Cor relies on).
    @property
    def granule_folder(self):
        return f"L1C_T{self.tile}_A036143_{self.sensing:%Y%m%d}T131359"

    @property
    def datastrip_folder(self):
        return "_".join(self.datastrip_id.split("_")[4:-1])

    def band_file(self, band):
        return f"T{self.tile}_{self.name.split('_')[2]}_{band}.jp2"

    def objects(self):
        """{key: (bytes, public)}: public objects are the metadata roda.sentinel-hub.com serves over HTTP."""
        timestamp = f"{self.sensing:%Y-%m-%dT%H:%M:%S}.024Z"
        tile_info = {"path": self.tile_path, "timestamp": timestamp, "utmZone": int(self.tile[:2]),
                     "latitudeBand": self.tile[2], "gridSquare": self.tile[3:], "productName": self.name,
                     "productPath": self.product_path, "datastrip": {"id": self.datastrip_id,
                                                                     "path": self.datastrip_path}}
        product_info = {"name": self.name, "path": self.product_path, "timestamp": timestamp,
                        "tiles": [tile_info], "datastrips": [{"id": self.datastrip_id, "path": self.datastrip_path}]}
        t, p, d = self.tile_path, self.product_path, self.datastrip_path
        found = {
            f"{p}/productInfo.json": (json.dumps(product_info).encode(), True),
            f"{p}/metadata.xml": (product_metadata(self.name), True),
            f"{p}/manifest.safe": (b'<?xml version="1.0"?><xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1"/>', False),
            f"{p}/inspire.xml": (b'<?xml version="1.0"?><gmd:MD_Metadata xmlns:gmd="http://www.isotc211.org/2005/gmd"/>',
                                 False),
            f"{d}/metadata.xml": (f"<Level-1C_DataStrip_ID><General_Info><DATASTRIP_ID>{self.datastrip_id}"
                                  f"</DATASTRIP_ID></General_Info></Level-1C_DataStrip_ID>".encode(), False),
            f"{t}/tileInfo.json": (json.dumps(tile_info).encode(), True),
            f"{t}/productInfo.json": (json.dumps(product_info).encode(), True),
            f"{t}/metadata.xml": (tile_metadata(self.granule_id, self.datastrip_id, timestamp), True),
            f"{t}/TCI.jp2": (jp2(3, "Byte"), False),
            f"{t}/preview.jp2": (jp2(3, "Byte"), False),
            f"{t}/preview.jpg": (b"\xff\xd8\xff\xe0 preview", True),
            f"{t}/auxiliary/ECMWFT": (b"GRIB ecmwf forecast", False),
            f"{t}/auxiliary/CAMSFO": (b"GRIB cams forecast", False),
            # Since baseline 04.00 the cloud mask is MSK_CLASSI_B00.jp2 (sentinelhub asks for CLASSI_B00.jp2).
            f"{t}/qi/MSK_CLASSI_B00.jp2": (jp2(1, "Byte"), False),
        }
        for index, band in enumerate(BANDS):
            found[f"{t}/{band}.jp2"] = (jp2(1, "UInt16", 1000 + index), False)
            for mask in ("DETFOO", "QUALIT"):
                found[f"{t}/qi/{mask}_{band}.jp2"] = (jp2(1, "Byte"), False)
        for report in REPORTS:
            found[f"{d}/qi/{report}_report.xml"] = (f"<Earth_Explorer_File>{report}</Earth_Explorer_File>".encode(),
                                                    False)
            if report != "RADIOMETRIC_QUALITY":
                found[f"{t}/qi/{report}.xml"] = (f"<Earth_Explorer_File>{report}</Earth_Explorer_File>".encode(), False)
        return {key: value for key, value in found.items() if key not in self.absent}


def product_metadata(name):
    return (f'<?xml version="1.0" encoding="UTF-8"?><n1:Level-1C_User_Product '
            f'xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd"><n1:General_Info>'
            f"<Product_Info><PRODUCT_URI>{name}.SAFE</PRODUCT_URI><PROCESSING_LEVEL>Level-1C</PROCESSING_LEVEL>"
            f"<PRODUCT_TYPE>S2MSI1C</PRODUCT_TYPE><PROCESSING_BASELINE>05.10</PROCESSING_BASELINE></Product_Info>"
            f"</n1:General_Info></n1:Level-1C_User_Product>").encode()


def tile_metadata(granule_id, datastrip_id, timestamp):
    return (f'<?xml version="1.0" encoding="UTF-8"?><n1:Level-1C_Tile_ID '
            f'xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-1C_Tile_Metadata.xsd"><n1:General_Info>'
            f'<TILE_ID metadataLevel="Brief">{granule_id}</TILE_ID><DATASTRIP_ID metadataLevel="Standard">'
            f"{datastrip_id}</DATASTRIP_ID><SENSING_TIME>{timestamp}</SENSING_TIME></n1:General_Info>"
            f"</n1:Level-1C_Tile_ID>").encode()


def jp2(bands, data_type, value=7, size=16):
    """A real (tiny) JPEG 2000 file, written by GDAL's OpenJPEG driver."""
    source = gdal.GetDriverByName("MEM").Create("", size, size, bands, gdal.GetDataTypeByName(data_type))
    for index in range(bands):
        source.GetRasterBand(index + 1).Fill(value)
    path = f"/vsimem/{value}_{bands}_{data_type}.jp2"
    gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(path, source, options=["REVERSIBLE=YES", "QUALITY=100"])
    handle = gdal.VSIFOpenL(path, "rb")
    gdal.VSIFSeekL(handle, 0, 2)
    length = gdal.VSIFTellL(handle)
    gdal.VSIFSeekL(handle, 0, 0)
    data = gdal.VSIFReadL(1, length, handle)
    gdal.VSIFCloseL(handle)
    gdal.Unlink(path)
    return data


NAME = "S2B_MSIL1C_20240206T131259_N0510_R081_T27VWK_20240206T133903"
INCOMPLETE = "S2A_MSIL1C_20240209T132231_N0510_R038_T27VWK_20240209T150113"  # B05 missing in the bucket
ABSENT = "S2A_MSIL1C_20240216T131239_N0510_R081_T27VWK_20240216T145540"  # not in the bucket at all
PRODUCT = Product(NAME)


# ---- servers --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto_url():
    """moto's standalone server in its own process, with the bucket and two products."""
    with s3server.moto_server() as url:
        try:
            s3 = s3server.client(url)
            s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": s3server.REGION})
            for product in (PRODUCT, Product(INCOMPLETE, absent={f"{Product(INCOMPLETE).tile_path}/B05.jp2"})):
                for key, (body, public) in product.objects().items():
                    s3.put_object(Bucket=BUCKET, Key=key, Body=body, ACL="public-read" if public else "private")
            yield url
        finally:
            with warnings.catch_warnings():  # collect sentinelhub's unclosed clients here, quietly (see pytestmark)
                warnings.simplefilter("ignore", ResourceWarning)
                gc.collect()


class Gate(http.server.ThreadingHTTPServer):
    """AWS's requester-pays rule in front of moto (see the module docstring)."""

    daemon_threads = True

    def __init__(self, upstream_port):
        super().__init__(("127.0.0.1", 0), GateHandler)
        self.upstream_port = upstream_port
        self.seen = []  # (method, path, headers)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def gets(self, suffix=""):
        return [path for method, path, _ in self.seen if method == "GET" and path.endswith(suffix)]


class GateHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server API name)
        self.server.seen.append((self.command, self.path, self.headers))
        authorization = self.headers.get("Authorization") or ""
        if "Credential=DENIED/" in authorization or self.headers.get("x-amz-request-payer") != "requester":
            body = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            return self.answer(403, [("Content-Type", "application/xml")], body)
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        try:
            upstream.request(self.command, self.path, headers=dict(self.headers.items()))
            reply = upstream.getresponse()
            body = reply.read()
            headers = [(k, v) for k, v in reply.getheaders() if k.lower() not in ("content-length", "connection",
                                                                                  "transfer-encoding")]
            self.answer(reply.status, headers, body, length=reply.getheader("Content-Length"))
        finally:
            upstream.close()

    do_HEAD = do_GET

    def answer(self, status, headers, body, length=None):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@pytest.fixture(scope="module")
def gate_server(moto_url):
    server = Gate(int(moto_url.rsplit(":", 1)[1]))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def gate(gate_server):
    gate_server.seen.clear()
    return gate_server


def use_local_bucket(patch, folder, moto_url, gate_url):
    """No ambient AWS or sentinelhub settings, no instance-metadata lookups; the bucket is the local one."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "SH_PROFILE"):
        patch.delenv(name, raising=False)
    patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    patch.setenv("AWS_CONFIG_FILE", str(folder / "no-aws-config"))
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "no-aws-credentials"))
    patch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    patch.setenv("XDG_CONFIG_HOME", str(folder / "config"))  # sentinelhub writes its config.toml there
    patch.setenv(aws.ENDPOINT_ENV, gate_url)
    patch.setenv(aws.METADATA_ENV, moto_url)


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch, tmp_path_factory, moto_url, gate_server):
    use_local_bucket(monkeypatch, tmp_path_factory.mktemp("settings"), moto_url, gate_server.url)


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory, moto_url, gate_server):
    """One download of the product, shared by the tests that only look at its outcome: (folder, result, lines,
    fractions, requests the gate relayed)."""
    folder = tmp_path_factory.mktemp("rebuilt")
    with pytest.MonkeyPatch.context() as patch:
        use_local_bucket(patch, tmp_path_factory.mktemp("settings"), moto_url, gate_server.url)
        gate_server.seen.clear()
        (result,), lines, fractions = run([NAME], folder)
    return folder, result, lines, fractions, list(gate_server.seen)


def footprint(name):
    return Footprint(id=name, name=name, provider="earth-search", geometry=None,
                     sensing_start=parse_product_name(name)["sensing_start"])


def run(names, folder, credentials=KEYS, parallel=4, is_cancelled=lambda: False):
    lines, fractions = [], []
    results = aws.download([footprint(n) for n in names], str(folder), Options(credentials=credentials,
                                                                               parallel=parallel),
                           None, lambda fraction, message="": fractions.append(fraction), is_cancelled, lines.append)
    return results, lines, fractions


# ---- tests ----------------------------------------------------------------------------------------------------

def test_product_is_rebuilt_as_a_sen2cor_ready_safe(rebuilt):
    folder, result, lines, fractions, seen = rebuilt

    assert result.status == "downloaded", result.reason
    path = folder / f"{NAME}.SAFE"
    assert result.path == str(path)
    assert os.listdir(folder) == [f"{NAME}.SAFE"]  # the work folder is gone
    granule = path / "GRANULE" / PRODUCT.granule_folder
    datastrip = path / "DATASTRIP" / PRODUCT.datastrip_folder
    for part in ("manifest.safe", "MTD_MSIL1C.xml", "INSPIRE.xml", "AUX_DATA", "HTML", "rep_info",
                 f"DATASTRIP/{PRODUCT.datastrip_folder}/MTD_DS.xml",
                 f"DATASTRIP/{PRODUCT.datastrip_folder}/QI_DATA/GENERAL_QUALITY.xml",
                 f"GRANULE/{PRODUCT.granule_folder}/MTD_TL.xml",
                 f"GRANULE/{PRODUCT.granule_folder}/AUX_DATA/AUX_ECMWFT",
                 f"GRANULE/{PRODUCT.granule_folder}/AUX_DATA/AUX_CAMSFO",
                 f"GRANULE/{PRODUCT.granule_folder}/QI_DATA/MSK_DETFOO_B04.jp2",
                 f"GRANULE/{PRODUCT.granule_folder}/QI_DATA/{PRODUCT.band_file('PVI')}"):
        assert (path / part).exists(), part
    assert sorted(os.listdir(granule / "IMG_DATA")) == sorted(PRODUCT.band_file(b) for b in (*BANDS, "TCI"))
    assert os.listdir(datastrip / "QI_DATA") and safe.check(str(path), level="L1C") == []
    band = gdal.Open(str(granule / "IMG_DATA" / PRODUCT.band_file("B04")))
    assert band.RasterXSize == 16 and band.GetRasterBand(1).ComputeRasterMinMax() == (1003, 1003)
    # Every S3 request paid as requester with our key; the one optional file the bucket lacks is logged.
    assert len([path for method, path, _ in seen if method == "GET" and path.endswith(".jp2")]) == 14 + 1 + 26 + 1
    assert all(h["x-amz-request-payer"] == "requester" and f"Credential={KEYS.username}/" in h["Authorization"]
               for _, _, h in seen)
    assert any("optional file(s) are not in the bucket" in line and "MSK_CLASSI_B00.jp2" in line for line in lines)
    assert lines[-1] == f"Downloaded {NAME} from AWS as {NAME}.SAFE."
    assert fractions[-1] == pytest.approx(1.0)


def test_a_complete_product_is_skipped_without_touching_the_bucket(rebuilt, tmp_path, gate):
    shutil.copytree(rebuilt[0] / f"{NAME}.SAFE", tmp_path / f"{NAME}.SAFE")
    os.rmdir(tmp_path / f"{NAME}.SAFE" / "HTML")  # as after a copy that drops empty folders: repaired, not fetched

    (result,), lines, _ = run([NAME], tmp_path)

    assert result.status == "skipped" and result.path == str(tmp_path / f"{NAME}.SAFE")
    assert gate.seen == [] and (tmp_path / f"{NAME}.SAFE" / "HTML").is_dir()
    assert lines[-1] == f"Skipped {NAME}: already complete in the output folder."


def test_an_interrupted_download_resumes_and_replaces_a_cut_file(tmp_path, gate):
    img_data = tmp_path / f".{NAME}.SAFE.aws" / f"{NAME}.SAFE" / "GRANULE" / PRODUCT.granule_folder / "IMG_DATA"
    img_data.mkdir(parents=True)
    objects = PRODUCT.objects()
    complete = objects[f"{PRODUCT.tile_path}/B03.jp2"][0]
    (img_data / PRODUCT.band_file("B03")).write_bytes(complete)  # fetched before the interruption
    (img_data / PRODUCT.band_file("B02")).write_bytes(objects[f"{PRODUCT.tile_path}/B02.jp2"][0][:100])  # cut

    (result,), _, _ = run([NAME], tmp_path)

    assert result.status == "downloaded", result.reason
    final = tmp_path / f"{NAME}.SAFE" / "GRANULE" / PRODUCT.granule_folder / "IMG_DATA"
    assert (final / PRODUCT.band_file("B02")).read_bytes() == objects[f"{PRODUCT.tile_path}/B02.jp2"][0]
    assert (final / PRODUCT.band_file("B03")).read_bytes() == complete
    assert gate.gets("/B02.jp2") and not gate.gets("/B03.jp2")  # B03 was only compared (HEAD), not fetched


def test_keys_from_the_aws_environment_and_cancel_leaves_a_resumable_folder(tmp_path, gate, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENVIRONMENT1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "environment-secret")

    with pytest.raises(Cancelled):
        run([NAME], tmp_path, credentials=None, parallel=1, is_cancelled=lambda: bool(gate.gets(".jp2")))

    assert gate.seen and all("Credential=AKIAFROMENVIRONMENT1/" in h["Authorization"] for _, _, h in gate.seen)
    assert os.listdir(tmp_path) == [f".{NAME}.SAFE.aws"]  # no final .SAFE, the fetched files kept for a resume
    fetched = len(gate.gets(".jp2"))
    time.sleep(0.5)
    assert len(gate.gets(".jp2")) == fetched < 5  # nothing goes on in the background


def test_missing_keys_say_how_to_provide_them(tmp_path, gate):
    with pytest.raises(ParameterError) as raised:
        run([NAME], tmp_path, credentials=None)

    message = str(raised.value)
    assert message.startswith("AUTH: the aws source needs AWS access keys")
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message and "AWS_PROFILE" in message
    assert gate.seen == [] and os.listdir(tmp_path) == []


def test_a_product_not_in_the_bucket_fails_with_a_sentence(rebuilt, tmp_path, gate):
    shutil.copytree(rebuilt[0] / f"{NAME}.SAFE", tmp_path / f"{NAME}.SAFE")

    results, lines, _ = run([ABSENT, NAME], tmp_path)

    absent, present = results
    assert absent.status == "failed" and absent.path is None
    assert absent.reason == (f"{ABSENT} is not in the AWS bucket {BUCKET}: 127.0.0.1 has no metadata for it; "
                             f"choose the cdse source for it.")
    assert present.status == "skipped"  # the batch goes on
    assert not os.path.exists(tmp_path / f".{ABSENT}.SAFE.aws")
    assert f"Failed: {absent.reason}" in lines


def test_a_product_lacking_a_band_fails_and_leaves_no_safe(tmp_path):
    (result,), _, _ = run([INCOMPLETE], tmp_path)

    assert result.status == "failed"
    assert result.reason.startswith(f"{INCOMPLETE}: the bucket {BUCKET} lacks 1 file(s) Sen2Cor needs, such as "
                                    f"GRANULE/")
    assert result.reason.endswith("_B05.jp2; choose the cdse source for it.")
    assert os.listdir(tmp_path) == []  # neither a .SAFE nor a work folder that no run could complete


def test_access_denied_by_the_bucket_is_one_sentence(tmp_path):
    (result,), _, _ = run([NAME], tmp_path, credentials=Credentials("DENIED", "whatever"))

    assert result.status == "failed"
    assert result.reason == (f"{NAME}: AWS denied access to the bucket {BUCKET} (AccessDenied); the keys must belong "
                             f"to an AWS account allowed to read requester-pays buckets (s3:GetObject), which pays "
                             f"the transfer.")
    assert "whatever" not in result.reason and not (tmp_path / f"{NAME}.SAFE").exists()


def test_level_2a_products_are_refused_with_a_sentence(tmp_path, gate):
    name = "S2B_MSIL2A_20240206T131259_N0510_R081_T27VWK_20240206T150321"

    (result,), _, _ = run([name], tmp_path)

    assert result.status == "failed" and "rebuilds Level-1C products only" in result.reason
    assert gate.seen == []


def test_without_boto3_the_sentence_gives_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # what an installation without the extra looks like

    with pytest.raises(MissingDependency) as raised:
        run([NAME], tmp_path)

    message = str(raised.value)
    assert "for the aws download source" in message and message.endswith('pip install --user '
                                                                          '--break-system-packages "sentinelhub[aws]"')
