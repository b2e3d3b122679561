"""Every local service `make demo` needs, in one background process, plus the demo's account in a QGIS auth DB.

    python scripts/demo_services.py serve --tiles 30TYP,31TCJ --json build/demo/services.json
    python scripts/demo_services.py auth --auth-dir build/demo/auth --master-file build/demo/master.txt

``serve`` starts, on 127.0.0.1, the same replicas the tests use, with small data:

- the Copernicus Data Space: the OData catalogue (``tests/replicas/odata.py``) listing Level-1C products of the
  tiles and period, each with the size and MD5 of a real zip served at ``Products(<Id>)/$value`` to requests
  that carry a live bearer token, and the identity service (``tests/replicas/identity.py``) that issues tokens
  for the demo account. The zips hold synthetic but well-formed .SAFE products built here from the project's
  own templates (``data/demo/templates``): product, tile and datastrip metadata, manifest, and tiny JPEG 2000
  band images placed on the tile's real grid position;
- DLR's L3A download tree (``tests/replicas/dlr.py``, its demo layout: Berlin, 2021-04 to 2021-07), built once
  into ``--dlr-folder``.

The ports are fixed (8765, 8766) unless taken, so the URLs outputs record (the footprints' download links, the
L3A files' service) are the same from run to run. When everything listens it writes the URLs to ``--json``
(atomically); it answers until SIGTERM or SIGINT, then stops the servers and removes that file. One line per
request goes to stderr; ``GET <services>/_demo/stats`` says what happened (token grants, zips served), never a
token. Deterministic: the same arguments give the same bytes.

``auth`` writes a QGIS authentication database with one Basic configuration, "demo account" (id ``s2demo1``),
holding the account the identity service accepts, encrypted with the master password of ``--master-file``
(what ``QGIS_AUTH_PASSWORD_FILE`` gives qgis_process). The password never leaves this file and that database.
"""

import argparse
import datetime as dt
import hashlib
import http.server
import io
import json
import os
import re
import signal
import string
import sys
import threading
import types
import urllib.parse
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import composite_scenes  # noqa: E402
import conftest  # noqa: E402,F401  (links the repository as the `sentinel2_pipeline` package)
from replicas import dlr, odata  # noqa: E402
from replicas.identity import Identity  # noqa: E402

from sentinel2_pipeline.plugin.engine import grid  # noqa: E402

TEMPLATES = os.path.join(ROOT, "data", "demo", "templates")
DEMO_TILES = "30TYP,31TCJ"  # the minimal tile cover of data/demo/gers_toulouse.geojson
# The demo account of the local identity service (not a real one; it exists only in this process and in the
# demo's encrypted auth database).
USER, PASSWORD = "demo@example.org", "demo-account-password"
AUTH_ID, AUTH_NAME = "s2demo1", "demo account"
TOKEN_PATH = "/auth/realms/CDSE/protocol/openid-connect/token"  # the real service's path
STATS_PATH = "/_demo/stats"
VALUE_PATH = re.compile(r"^" + re.escape(odata.ROOT) + r"/Products\(([0-9a-f-]{36})\)/\$value$")

# Band images of a Level-1C granule with their resolution (m) and the size of the demo's images (pixels across
# the 109.8 km tile: coarse, so a product is ~50 kB, but real georeferenced JPEG 2000).
BANDS = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10, "B8A": 20,
         "B09": 60, "B10": 60, "B11": 20, "B12": 20, "TCI": 10}
PIXELS = {10: 24, 20: 12, 60: 4}
NSSDC = {"A": "2015-028A", "B": "2017-013A", "C": "2024-157A"}


# ---- synthetic Level-1C products ----------------------------------------------------------------------------


def _template(name):
    with open(os.path.join(TEMPLATES, name), encoding="utf-8") as stream:
        return string.Template(stream.read())


def _compact(text):
    """'2023-06-01T10:50:31.024000Z' -> '20230601T105031'."""
    return re.sub(r"[-:]", "", text)[:15]


def product_fields(product):
    """The values the templates need, from a listed product (name and attributes)."""
    attributes = {a["Name"]: a["Value"] for a in product["Attributes"]}
    name = product["Name"]
    mission, _, sensing, baseline, orbit, tile_field, generation = name[: -len(".SAFE")].split("_")
    tile = grid.parse_tile_id(tile_field[1:])
    platform = mission[-1]
    absolute = int(attributes["orbitNumber"])
    datastrip_id = attributes["datastripId"]
    centre = datastrip_id.split("_DS_")[1].split("_")[0]  # 2APS
    return {
        "product_uri": name, "platform": platform, "spacecraft": f"Sentinel-2{platform}",
        "nssdc": NSSDC.get(platform, "2015-028A"), "tile": tile, "sensing": sensing, "generation": generation,
        "sensing_time": product["ContentDate"]["Start"], "generation_time": attributes["processingDate"],
        "baseline": f"{baseline[1:3]}.{baseline[3:5]}", "relative_orbit": str(int(orbit[1:])),
        "datatake_id": attributes["productGroupId"], "datastrip_id": datastrip_id, "centre": centre,
        "datastrip_folder": "DS_" + datastrip_id.split("_DS_")[1].rsplit("_N", 1)[0],
        "granule_folder": f"L1C_{tile_field}_A{absolute:06d}_{sensing}",
        "tile_identifier": f"S2{platform}_OPER_MSI_L1C_TL_{centre}_{generation}_A{absolute:06d}_{tile_field}_"
                           f"N{baseline[1:3]}.{baseline[3:5]}",
        "cloud_cover": f"{float(attributes['cloudCover']):.6f}",
    }


def tile_angles(tile):
    """A ``Tile_Angles`` block shaped like ESA's (sun grid, viewing grids of 13 bands x 2 detectors that meet in
    the middle of the tile, NaN where a detector does not see), with smooth synthetic values: a June morning sun
    over southern France and a view zenith growing from the swath centre."""
    def grid(tag, value):
        rows = "\n".join("            <VALUES>" + " ".join(value(r, c) for c in range(23)) + "</VALUES>"
                         for r in range(23))
        return (f"        <{tag}>\n          <COL_STEP unit=\"m\">5000</COL_STEP>\n          <ROW_STEP unit=\"m\">5000"
                f"</ROW_STEP>\n          <Values_List>\n{rows}\n          </Values_List>\n        </{tag}>")

    def sun(tag, start, across, down):
        return grid(tag, lambda r, c: f"{start + across * c + down * r:.4f}")

    def view(detector, tag):
        west = detector == 1
        def value(r, c):
            if (c > 12) if west else (c < 10):
                return "NaN"
            if tag == "Zenith":
                return f"{2.0 + 0.45 * abs(c - 11) + 0.01 * r:.4f}"
            return f"{(285.0 if west else 105.0) + 0.05 * r:.4f}"
        return grid(tag, value)

    parts = ["    <Tile_Angles metadataLevel=\"Standard\">", "      <Sun_Angles_Grid>",
             sun("Zenith", 27.0, 0.02, 0.03), sun("Azimuth", 128.0, 0.09, -0.02), "      </Sun_Angles_Grid>"]
    for band in range(13):
        for detector in (1, 2):
            parts += [f"      <Viewing_Incidence_Angles_Grids bandId=\"{band}\" detectorId=\"{detector}\">",
                      view(detector, "Zenith"), view(detector, "Azimuth"), "      </Viewing_Incidence_Angles_Grids>"]
    return "\n".join(parts + ["    </Tile_Angles>"])


def safe_files(product):
    """{relative path: bytes, or None for a folder} of the .SAFE product ``product`` lists."""
    f = product_fields(product)
    tile = f["tile"]
    top, granule = f["product_uri"], f"GRANULE/{f['granule_folder']}"
    stem = f"T{tile.tile_id}_{f['sensing']}"
    images = [f"{granule}/IMG_DATA/{stem}_{band}" for band in BANDS]
    offsets = "\n".join(f'        <RADIO_ADD_OFFSET band_id="{index}">-1000</RADIO_ADD_OFFSET>'
                        for index in range(len(BANDS) - 1))
    values = dict(f, zone=str(tile.zone), hemisphere="N" if tile.epsg < 32700 else "S", epsg=str(tile.epsg),
                  ulx=f"{tile.ulx:.0f}", uly=f"{tile.uly:.0f}", offsets=offsets, tile_angles=tile_angles(tile),
                  image_files="\n".join(f"            <IMAGE_FILE>{image}</IMAGE_FILE>" for image in images))
    mtd = _template("MTD_MSIL1C.xml").substitute(values).encode()
    values.update(mtd_size=str(len(mtd)), mtd_md5=hashlib.md5(mtd).hexdigest())
    files = {
        "": None, "MTD_MSIL1C.xml": mtd, "manifest.safe": _template("manifest.safe").substitute(values).encode(),
        "AUX_DATA": None, "HTML": None, "rep_info": None, "DATASTRIP": None,
        f"DATASTRIP/{f['datastrip_folder']}": None,
        f"DATASTRIP/{f['datastrip_folder']}/MTD_DS.xml": _template("MTD_DS.xml").substitute(values).encode(),
        f"DATASTRIP/{f['datastrip_folder']}/QI_DATA": None,
        "GRANULE": None, granule: None, f"{granule}/MTD_TL.xml": _template("MTD_TL.xml").substitute(values).encode(),
        f"{granule}/AUX_DATA": None, f"{granule}/QI_DATA": None, f"{granule}/IMG_DATA": None,
    }
    for band, image in zip(BANDS, images):
        files[image + ".jp2"] = band_image(tile.tile_id, band)
    return {(top + "/" + path).rstrip("/"): data for path, data in files.items()}


def safe_zip(product):
    """The product's zip as the Data Space delivers it: the .SAFE folder at the top, folder entries included;
    fixed dates and order, so the same product always gives the same bytes (and MD5)."""
    stamp = dt.datetime.strptime(product_fields(product)["generation"], "%Y%m%dT%H%M%S").timetuple()[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in safe_files(product).items():
            info = zipfile.ZipInfo(path + ("/" if data is None else ""), date_time=stamp)
            info.create_system = 3  # Unix: the mode bits below are what the extraction checks
            info.external_attr = ((0o40755 << 16) | 0x10) if data is None else (0o100644 << 16)
            info.compress_type = zipfile.ZIP_STORED if data is None else zipfile.ZIP_DEFLATED
            archive.writestr(info, data or b"")
    return buffer.getvalue()


_IMAGES = {}


def band_image(tile_id, band):
    """A small JPEG 2000 band image on the tile's grid position (lossless, deterministic); one per tile and band."""
    key = (tile_id, band)
    if key not in _IMAGES:
        _IMAGES[key] = _jp2(grid.parse_tile_id(tile_id), band)
    return _IMAGES[key]


def _jp2(tile, band):
    import numpy as np
    from osgeo import gdal, osr

    size = PIXELS[BANDS[band]]
    rows, cols = np.indices((size, size))
    index = list(BANDS).index(band)
    if band == "TCI":
        data, kind = np.stack([rows * 200 // size + 30, cols * 200 // size + 30, (rows + cols) * 100 // size + 30]), \
            gdal.GDT_Byte
    else:
        data, kind = (1000 + 97 * index + 13 * rows + 7 * cols)[None], gdal.GDT_UInt16
    driver = gdal.GetDriverByName("JP2OpenJPEG")
    if driver is None:  # a GDAL without OpenJPEG: the signature box and deterministic bytes (safe.py needs the name)
        return b"\x00\x00\x00\x0cjP  \r\n\x87\n" + hashlib.sha256(f"{tile.tile_id}{band}".encode()).digest() * 64
    memory = gdal.GetDriverByName("MEM").Create("", size, size, data.shape[0], kind)
    pixel = grid.TILE_SIZE / size
    memory.SetGeoTransform((tile.ulx, pixel, 0.0, tile.uly, 0.0, -pixel))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(tile.epsg)
    memory.SetProjection(srs.ExportToWkt())
    for number, plane in enumerate(data, start=1):
        memory.GetRasterBand(number).WriteArray(plane)
    path = f"/vsimem/demo_services_{tile.tile_id}_{band}.jp2"
    driver.CreateCopy(path, memory, options=["REVERSIBLE=YES", "QUALITY=100"])
    handle = gdal.VSIFOpenL(path, "rb")
    try:
        gdal.VSIFSeekL(handle, 0, 2)
        length = gdal.VSIFTellL(handle)
        gdal.VSIFSeekL(handle, 0, 0)
        content = bytes(gdal.VSIFReadL(1, length, handle))
    finally:
        gdal.VSIFCloseL(handle)
        for name in (path, path + ".aux.xml"):
            if gdal.VSIStatL(name) is not None:  # Unlink of a missing file raises when GDAL exceptions are on
                gdal.Unlink(name)
    return content


# ---- the Copernicus Data Space: catalogue, identity, downloads ----------------------------------------------


class _Routes:
    """What replicas.identity.Identity needs of its server (tests/servers.py's ``route`` and ``url``), without
    the test tooling: handlers by (method, path)."""

    def __init__(self, base_url):
        self.base_url, self.handlers = base_url, {}

    def route(self, path, method="GET", handler=None):
        self.handlers[(method, path)] = handler
        return handler

    def url(self, path="/"):
        return self.base_url + path


class DataSpace:
    """The catalogue replica with real zips behind tokens of the identity replica, on one port."""

    def __init__(self, products, host="127.0.0.1", port=0, log=None):
        self.log = log or (lambda line: None)
        self.zips = {}
        listed = []
        for product in products:
            body = safe_zip(product)
            listed.append(odata.with_content(product, body))
            self.zips[product["Id"]] = body
        self.products = listed
        self.replica = odata.ODataReplica(listed)
        self.stats = {"catalogue_requests": 0, "zips_served": 0, "zip_bytes": 0, "refused": 0}
        self.lock = threading.Lock()
        self.server = _bound(lambda chosen: http.server.ThreadingHTTPServer((host, chosen), self._handler_class()),
                             port)
        self.server.daemon_threads = True
        self.base_url = f"http://{host}:{self.server.server_address[1]}"
        self.routes = _Routes(self.base_url)
        self.identity = Identity(self.routes, USER, PASSWORD, path=TOKEN_PATH)

    @property
    def odata_url(self):
        return self.base_url + odata.ROOT

    def start(self):
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if getattr(self, "thread", None):
            self.server.shutdown()
        self.server.server_close()

    def snapshot(self):
        with self.lock:
            stats = dict(self.stats)
        return {**stats, "grants": list(self.identity.grants), "token_refusals": list(self.identity.refusals)}

    def answer(self, method, target, headers, body):
        """(status, headers, body) for one request."""
        parts = urllib.parse.urlsplit(target)
        handler = self.routes.handlers.get((method, parts.path))
        if handler is not None:
            request = types.SimpleNamespace(method=method, path=parts.path, headers=headers, body=body)
            status, answer_headers, answer = handler(request)
            self.log(f"{method} {parts.path} -> {status} ({self.identity.grants[-1] if self.identity.grants else '?'}"
                     f" grant)")
            return status, answer_headers, answer
        if method not in ("GET", "HEAD"):
            return 405, {"Content-Type": "application/json"}, b'{"detail":"Method Not Allowed"}'
        if parts.path == odata.ROOT + "/Products":
            with self.lock:
                self.stats["catalogue_requests"] += 1
            pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            status, answer_headers, answer = self.replica.answer(parts.path, pairs, headers.get("Host"))
            self.log(f"GET {parts.path} -> {status} ({len(json.loads(answer).get('value', []))} products)"
                     if status == 200 else f"GET {parts.path} -> {status}")
            return status, answer_headers, answer
        if parts.path == STATS_PATH:
            return 200, {"Content-Type": "application/json"}, json.dumps(self.snapshot()).encode()
        match = VALUE_PATH.match(parts.path)
        if match and match.group(1) in self.zips:
            return self._zip(match.group(1), headers, parts.path)
        return 404, {"Content-Type": "application/json"}, b'{"detail":"Not Found"}'

    def _zip(self, product_id, headers, path):
        refusal = self.identity.check(headers.get("Authorization"))
        if refusal:
            with self.lock:
                self.stats["refused"] += 1
            self.log(f"GET {path} -> 401 (token {refusal})")
            return 401, {"Content-Type": "application/json"}, b'{"detail": "Expired signature!"}'
        body = self.zips[product_id]
        status, start, end = _range(headers.get("Range"), len(body))
        answer_headers = {"Content-Type": "application/zip", "Accept-Ranges": "bytes"}
        if status == 206:
            answer_headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
        elif status == 416:
            answer_headers["Content-Range"] = f"bytes */{len(body)}"
            return status, answer_headers, b""
        with self.lock:
            self.stats["zips_served"] += 1
            self.stats["zip_bytes"] += end - start + 1
        self.log(f"GET {path} -> {status} ({end - start + 1} bytes)")
        return status, answer_headers, body[start: end + 1]

    def _handler_class(self):
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, answer = service.answer(self.command, self.path, self.headers, body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if self.command != "HEAD":
                    try:
                        self.wfile.write(answer)
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True

            do_GET = do_HEAD = do_POST = _serve  # noqa: N815 (http.server API names)

        return Handler


def _bound(make, port):
    """``make(port)``, or ``make(0)`` (any free port) when ``port`` is taken."""
    try:
        return make(port)
    except OSError:
        if not port:
            raise
        return make(0)


def _range(header, size):
    """(status, first, last) for a single ``bytes=a-b`` range; anything else: the whole body."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if not match or match.groups() == ("", ""):
        return 200, 0, size - 1
    first, last = match.groups()
    start, end = (max(size - int(last), 0), size - 1) if first == "" else (
        int(first), min(int(last), size - 1) if last else size - 1)
    if start >= size or start > end:
        return 416, 0, -1
    return 206, start, end


# ---- commands ---------------------------------------------------------------------------------------------------


def _composite_scenes(space, folder, host):
    """The Level-2A scenes of tests/composite_scenes.py: COGs behind a range-serving file server, their items in a
    STAC API replica on the Data Space's port (root /stac/v1)."""
    from replicas import cogs
    from replicas import stac as stac_replica

    files = cogs.RangeFileServer(composite_scenes.write_cogs(folder), host=host).start()
    stac_replica.StacReplica(composite_scenes.items(files.url)).install(space.routes, root="/stac/v1")
    return files, space.routes.url("/stac/v1")


def serve(args):
    log_lock = threading.Lock()

    def log(line):
        with log_lock:
            print(f"[services] {line}", file=sys.stderr, flush=True)

    tiles = [t.strip().upper().lstrip("T") for t in args.tiles.split(",") if t.strip()]
    products = odata.generate_products(tiles, args.start, args.end, args.every_days, ("L1C",))
    space = DataSpace(products, args.host, args.port, log=log).start()
    tree = dlr.build(args.dlr_folder, dlr.DEMO_LAYOUT)
    files, stac_url = _composite_scenes(space, os.path.join(os.path.dirname(os.path.abspath(args.dlr_folder)),
                                                            "cog-replica"), args.host)
    dlr_server, dlr_url = _bound(lambda chosen: dlr.serve(dlr.DlrReplica(tree), args.host, chosen), args.dlr_port)
    urls = {"catalogue": space.odata_url, "download": space.odata_url, "token": space.routes.url(TOKEN_PATH),
            "stats": space.routes.url(STATS_PATH), "dlr": dlr_url, "stac": stac_url, "products": len(space.products),
            "zip_bytes": sum(p["ContentLength"] for p in space.products), "tiles": tiles,
            "period": [args.start.isoformat(), args.end.isoformat()], "account": AUTH_NAME}
    temporary = args.json + ".part"
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(urls, stream, indent=2)
    os.replace(temporary, args.json)
    log(f"Data Space replica: {len(space.products)} Level-1C products ({', '.join(tiles)}; {args.start} to "
        f"{args.end}) at {space.odata_url}/Products, zips behind tokens from {urls['token']}")
    log(f"DLR L3A replica: {tree} at {dlr_url}")
    log(f"STAC replica: {len(composite_scenes.SCENES)} Level-2A scenes at {stac_url}, COGs at {files.url('')}")
    log(f"URLs in {args.json}; stop with SIGTERM or Ctrl+C")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass
    space.stop()
    files.stop()
    dlr_server.shutdown()
    dlr_server.server_close()
    if os.path.exists(args.json):
        os.remove(args.json)
    log(f"stopped: {json.dumps(space.snapshot())}")
    return 0


CREATE_AUTH = """
import os, sys
from qgis.core import QgsApplication, QgsAuthMethodConfig
app = QgsApplication([], False)
app.initQgis()
manager = QgsApplication.authManager()
if not manager.setMasterPassword(os.environ["DEMO_MASTER"], True):
    sys.exit("the master password was refused")
config = QgsAuthMethodConfig()
config.setId(os.environ["DEMO_AUTH_ID"])
config.setName(os.environ["DEMO_AUTH_NAME"])
config.setMethod("Basic")
config.setConfig("username", os.environ["DEMO_USER"])
config.setConfig("password", os.environ["DEMO_PASSWORD"])
ok, config = manager.storeAuthenticationConfig(config)
app.exitQgis()
sys.exit(0 if ok else "the configuration could not be stored")
"""


def auth(args):
    """A new auth database in --auth-dir with the demo account (a child Python: QGIS prints debug lines)."""
    import shutil
    import subprocess

    with open(args.master_file, encoding="utf-8") as stream:
        master = stream.readline().rstrip("\n")
    if os.path.isdir(args.auth_dir):
        shutil.rmtree(args.auth_dir)
    os.makedirs(args.auth_dir)
    env = {**os.environ, "QGIS_AUTH_DB_DIR_PATH": os.path.abspath(args.auth_dir), "QT_QPA_PLATFORM": "offscreen",
           "DEMO_MASTER": master, "DEMO_AUTH_ID": AUTH_ID, "DEMO_AUTH_NAME": AUTH_NAME, "DEMO_USER": USER,
           "DEMO_PASSWORD": PASSWORD}
    if args.profile:
        env["QGIS_CUSTOM_CONFIG_PATH"] = os.path.abspath(args.profile)
    env.pop("QGIS_AUTH_PASSWORD_FILE", None)
    done = subprocess.run([sys.executable, "-c", CREATE_AUTH], env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        print(f"demo_services: could not create the auth database in {args.auth_dir}: "
              f"{(done.stderr.strip().splitlines() or ['no reason given'])[-1]}", file=sys.stderr)
        return 1
    print(AUTH_ID)
    return 0


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the replicas until SIGTERM")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8765,
                     help="Data Space port (default %(default)s; taken: any free port, 0: always any)")
    run.add_argument("--dlr-port", type=int, default=8766, help="DLR port (default %(default)s; as --port)")
    run.add_argument("--tiles", default=DEMO_TILES, help="comma-separated tile ids (default %(default)s)")
    run.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2023, 6, 1))
    run.add_argument("--end", type=dt.date.fromisoformat, default=dt.date(2023, 6, 30))
    run.add_argument("--every-days", type=int, default=5, help="days between acquisitions (default 5)")
    run.add_argument("--dlr-folder", default=os.path.join(ROOT, "build", "demo", "dlr-replica"),
                     help="where DLR's tree is built, once (default %(default)s)")
    run.add_argument("--json", required=True, help="the file the URLs are written to")
    account = commands.add_parser("auth", help="create the demo's QGIS auth database")
    account.add_argument("--auth-dir", required=True, help="QGIS_AUTH_DB_DIR_PATH (replaced)")
    account.add_argument("--master-file", required=True, help="QGIS_AUTH_PASSWORD_FILE: the master password")
    account.add_argument("--profile", help="QGIS_CUSTOM_CONFIG_PATH for the QGIS started to write it")
    return parser.parse_args(argv)


def main(argv=None):
    args = arguments(argv)
    return serve(args) if args.command == "serve" else auth(args)


if __name__ == "__main__":
    sys.exit(main())
