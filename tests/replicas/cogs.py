"""Cloud-Optimised GeoTIFF band files like Earth Search's, and a file server with HTTP Range support that counts
the body bytes it sends (for the tests and the benchmark of ``SOURCE=stac`` with an AOI).

:func:`band_cog` writes a 10980 x 10980 UInt16 COG (a 10 m band of one MGRS tile: 512 px tiles, DEFLATE with
the horizontal predictor, internal overviews) with GDAL's COG driver; the pixel values vary smoothly with some
noise, so DEFLATE compresses them about as much as real reflectances. It takes some seconds, so files are cached
(``build/cogs`` by default) and reused by later runs.

:class:`RangeFileServer` serves the files of a folder at ``/<name>`` over HTTP/1.1 with keep-alive: HEAD, GET,
single ``Range: bytes=`` requests answered 206 with Content-Range (as object stores do), or, with
``ranges=False``, every GET answered 200 with the whole file (a server that ignores Range). Files are read per
request, only the bytes asked for. ``sent`` and ``requests`` tell what went over the wire (``GET /__stats`` too, as
JSON, for a server run in another process).
"""

import http.server
import json
import os
import re
import threading
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(ROOT, "build", "cogs")
TILE_SIZE = 10980  # pixels of a 10 m band of one tile
# MGRS 31TCJ (Toulouse): UTM zone 31N, upper-left corner (300000, 4900020), as in its real product metadata.
EPSG = 32631
ORIGIN = (300000.0, 4900020.0)


def utm_rectangle(xmin, ymin, xmax, ymax, epsg=EPSG):
    """A rectangle of a UTM zone as EPSG:4326 WKB (the AOI an algorithm passes to the engine)."""
    from osgeo import ogr, osr

    utm, wgs84 = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(epsg)
    wgs84.ImportFromEPSG(4326)
    for srs in (utm, wgs84):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ring = f"{xmin} {ymin},{xmax} {ymin},{xmax} {ymax},{xmin} {ymax},{xmin} {ymin}"
    geometry = ogr.CreateGeometryFromWkt(f"POLYGON(({ring}))")
    geometry.AssignSpatialReference(utm)
    geometry.TransformTo(wgs84)
    return bytes(geometry.ExportToIsoWkb())


def band_cog(name="B04", size=TILE_SIZE, pixel=10.0, folder=CACHE, seed=4):
    """Path of a cached COG band (made once): ``size`` x ``size`` UInt16 pixels of ``pixel`` metres."""
    path = os.path.join(folder, f"{name}_{size}px.tif")
    if os.path.exists(path):
        return path
    os.makedirs(folder, exist_ok=True)
    plain = path + ".plain.tif"
    try:
        _write_plain(plain, size, pixel, seed)
        _to_cog(plain, path + ".part")
        os.replace(path + ".part", path)
    finally:
        for leftover in (plain, path + ".part"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return path


def _write_plain(path, size, pixel, seed):
    import numpy as np
    from osgeo import gdal, osr

    driver = gdal.GetDriverByName("GTiff")
    dataset = driver.Create(path, size, size, 1, gdal.GDT_UInt16, ["TILED=YES", "BLOCKXSIZE=512", "BLOCKYSIZE=512"])
    dataset.SetGeoTransform((ORIGIN[0], pixel, 0.0, ORIGIN[1], 0.0, -pixel))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    dataset.SetProjection(srs.ExportToWkt())
    band = dataset.GetRasterBand(1)
    band.SetNoDataValue(0)
    rng = np.random.default_rng(seed)
    columns = np.arange(size, dtype=np.float32)
    for top in range(0, size, 1024):
        rows = np.arange(top, min(top + 1024, size), dtype=np.float32)[:, None]
        field = 1500 + 700 * np.sin(columns / 310.0) * np.cos(rows / 420.0) + rows * 0.05
        noise = rng.integers(0, 120, size=(len(rows), size))
        band.WriteArray((field + noise).astype(np.uint16), 0, top)
    dataset = None


def _to_cog(source, target):
    from osgeo import gdal

    options = ["COMPRESS=DEFLATE", "PREDICTOR=YES", "BLOCKSIZE=512", "OVERVIEWS=AUTO", "NUM_THREADS=ALL_CPUS"]
    result = gdal.Translate(target, source, format="COG", creationOptions=options)
    if result is None:
        raise RuntimeError(f"GDAL could not write the COG {target}")
    result = None


class RangeFileServer:
    """See the module docstring. ``start()``/``stop()`` or a ``with`` block; ``url(name)``."""

    def __init__(self, folder, ranges=True, host="127.0.0.1"):
        self.folder = folder
        self.ranges = ranges
        self.sent = 0
        self.requests = []  # (method, path, Range header or "")
        self.lock = threading.Condition()
        self.in_flight = 0  # requests being answered (a request that dies mid-answer holds reset() 5 s at most)
        self.httpd = http.server.ThreadingHTTPServer((host, 0), _handler_class(self))
        self.httpd.daemon_threads = True
        self.thread = None

    def url(self, name):
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/{urllib.parse.quote(name)}"

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def reset(self):
        """Forget what was sent, once the requests being answered are counted: a client may have its last
        bytes before the handler that wrote them records the request."""
        with self.lock:
            self.lock.wait_for(lambda: self.in_flight == 0, timeout=5)
            self.sent = 0
            self.requests.clear()

    def begin(self):
        with self.lock:
            self.in_flight += 1

    def count(self, method, path, range_header, body_bytes):
        with self.lock:
            self.requests.append((method, path, range_header or ""))
            self.sent += body_bytes
            self.in_flight -= 1
            self.lock.notify_all()


def _handler_class(server):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_HEAD(self):  # noqa: N802 (http.server API name)
            self._serve(body=False)

        def do_GET(self):  # noqa: N802 (http.server API name)
            self._serve(body=True)

        def _serve(self, body):
            if self.path == "/__stats":  # for a server in another process (the benchmark)
                with server.lock:
                    stats = json.dumps({"sent": server.sent, "requests": len(server.requests)}).encode()
                self._reply(200, {"Content-Type": "application/json", "Content-Length": str(len(stats))})
                self.wfile.write(stats)
                return
            server.begin()  # every path below ends in server.count
            name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path.lstrip("/"))
            path = os.path.join(server.folder, os.path.basename(name))
            if not os.path.isfile(path):
                server.count(self.command, self.path, self.headers.get("Range"), 0)
                return self._reply(404, {"Content-Length": "0"})
            size = os.path.getsize(path)
            first, last = _wanted(self.headers.get("Range"), size) if server.ranges else (None, None)
            if first is not None and first >= size:
                server.count(self.command, self.path, self.headers.get("Range"), 0)
                return self._reply(416, {"Content-Range": f"bytes */{size}", "Content-Length": "0"})
            headers = {"Content-Type": "image/tiff", "Accept-Ranges": "bytes" if server.ranges else "none"}
            status, start, end = (200, 0, size - 1) if first is None else (206, first, last)
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            headers["Content-Length"] = str(end - start + 1)
            self._reply(status, headers)
            written = self._copy(path, start, end - start + 1) if body and self.command == "GET" else 0
            server.count(self.command, self.path, self.headers.get("Range"), written)

        def _reply(self, status, headers):
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()

        def _copy(self, path, start, length):
            written = 0
            try:
                with open(path, "rb") as stream:
                    stream.seek(start)
                    while written < length:
                        block = stream.read(min(1 << 20, length - written))
                        if not block:
                            break
                        self.wfile.write(block)
                        written += len(block)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            return written

    return Handler


def _wanted(header, size):
    """(first, last) byte of a single ``bytes=`` range, (None, None) when there is none (or several)."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if not match or match.group(1) == match.group(2) == "":
        return None, None
    first, last = match.groups()
    if first == "":
        return max(size - int(last), 0), size - 1
    return int(first), min(int(last), size - 1) if last else size - 1
