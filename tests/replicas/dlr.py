"""A local replica of DLR's download server for the Sentinel-2 L3A WASP monthly composites.

The real server (``https://download.geoservice.dlr.de/S2_L3A_WASP/files/``) is a tree of plain HTML directory
listings::

    <zone>/<latitude band>/<square>/<YYYY>/<PRODUCT>/<PRODUCT>_FRC_<band>.tif
    PRODUCT = SENTINEL2X_<YYYYMM>15-000000-000_L3A_T<tile>_C_V1-2

:func:`build` writes such a tree into a folder: int16 reflectance files (nodata -10000, the Theia convention)
and uint8 FLG masks (bit 0 no data, 1 cloud, 2 snow, 3 water, 4 land), tiled and DEFLATE-compressed like cloud
optimised GeoTIFFs. The tiles have their real position and extent (the 109.8 km tile grid of
``plugin.engine.grid``) but coarser pixels: ``Layout.pixel`` metres for the 10 m bands (300 by default, so a
file is 366 x 366 instead of 10980 x 10980), twice that for the 20 m bands and FLG_R2. The engine reads the
pixel size from each file, so nothing in it depends on 10 m. Where the FLG files sit on the real server is not
confirmed: ``Layout.masks`` puts them in the product folder, in a ``MASKS/`` subfolder, or nowhere.

:class:`DlrReplica` answers requests from such a folder with Apache-style listings (``FancyIndexing``: an HTML
table, long names shortened in the link text, sizes as ``240M``; or exact bytes, or no sizes). Two servers:
:func:`serve` (standalone, for ``make demo`` and the benchmark; Range on or off; ``GET /_stats`` returns the
bytes sent) and :func:`dlr_test_server` (the tests' ``tests/servers.py`` server: faults, request recording,
plus bytes counted per path). Nothing here reads ``../shared``.

    python tests/replicas/dlr.py --port 8766 --url-file build/demo/dlr.url [--no-ranges]
"""

import dataclasses
import functools
import hashlib
import html
import http.server
import json
import os
import posixpath
import shutil
import sys
import threading
import urllib.parse

if __name__ == "__main__":  # run as a script: make the repository importable as `sentinel2_pipeline`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import conftest  # noqa: F401

from sentinel2_pipeline.plugin.engine import grid

ROOT = "/S2_L3A_WASP/files/"
R1_BANDS = ("B2", "B3", "B4", "B8")
R2_BANDS = ("B5", "B6", "B7", "B8A", "B11", "B12")
BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
NODATA = -10000
LAND, WATER, CLOUD, SNOW, NO_DATA = 16, 8, 2, 4, 1
EDGE = 3  # columns at the west edge of every tile without data (nodata / FLG bit 0), as in real tile overlaps
MTIME = "2022-03-02 10:11"


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a replica tree holds.

    ``months``: ``YYYY-MM`` strings. ``missing``: tuples ``(tile, month, band)`` left out; ``band`` None leaves
    out the whole product, ``month`` None the whole tile. ``clouds``: ``{month: k}`` flags every k-th row of
    every tile of that month as cloud (k=1: all of it); ``snow`` likewise. ``versions``: ``{month: ("V1-1",)}``
    extra older versions published next to ``version`` for that month.
    """

    tiles: tuple
    months: tuple
    bands: tuple = BANDS
    pixel: float = 300.0
    version: str = "V1-2"
    masks: str = "root"  # "root", "MASKS" or "none"
    missing: frozenset = frozenset()
    clouds: tuple = ()  # ((month, k), ...): hashable
    snow: tuple = ()
    versions: tuple = ()  # ((month, ("V1-1",)), ...)
    block: int = 64

    def key(self):
        return hashlib.sha1(repr(self).encode()).hexdigest()[:12]


def product_name(tile_id, month, version="V1-2"):
    return f"SENTINEL2X_{month.replace('-', '')}15-000000-000_L3A_T{tile_id}_C_{version}"


def product_folder(tile_id, month):
    """The folder (relative to the root) that holds a tile's products of one year."""
    return f"{tile_id[:2]}/{tile_id[2]}/{tile_id[3:]}/{month[:4]}"


# ---- building a tree --------------------------------------------------------------------------------------


def build(folder, layout):
    """Write the tree of ``layout`` under ``folder`` (skipped when it is already there); returns ``folder``."""
    stamp = os.path.join(folder, f".layout-{layout.key()}")
    if os.path.exists(stamp):
        return folder
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    for tile_index, tile_id in enumerate(layout.tiles):
        if (tile_id, None, None) in layout.missing:
            continue
        for month in layout.months:
            if (tile_id, month, None) in layout.missing:
                continue
            versions = dict(layout.versions).get(month, ()) + (layout.version,)
            for version in versions:
                _write_product(folder, layout, tile_index, tile_id, month, version)
    os.makedirs(folder, exist_ok=True)
    open(stamp, "w").close()
    return folder


def _write_product(folder, layout, tile_index, tile_id, month, version):
    name = product_name(tile_id, month, version)
    base = os.path.join(folder, product_folder(tile_id, month), name)
    os.makedirs(base, exist_ok=True)
    tile = grid.parse_tile_id(tile_id)
    for band in layout.bands:
        if (tile_id, month, band) not in layout.missing:
            pixel = layout.pixel * (1 if band in R1_BANDS else 2)
            data = reflectance(tile, pixel, BANDS.index(band) + 1, tile_index, int(month[5:]))
            _write(os.path.join(base, f"{name}_FRC_{band}.tif"), tile, pixel, data, NODATA, layout.block)
    if layout.masks == "none":
        return
    masks = base if layout.masks == "root" else os.path.join(base, "MASKS")
    os.makedirs(masks, exist_ok=True)
    for resolution in (1, 2):
        pixel = layout.pixel * resolution
        flags = flag_mask(tile, pixel, dict(layout.clouds).get(month), dict(layout.snow).get(month))
        _write(os.path.join(masks, f"{name}_FLG_R{resolution}.tif"), tile, pixel, flags, None, layout.block)


def reflectance(tile, pixel, band_number, tile_index, month_number):
    """Deterministic int16 values that differ per band, tile and month and vary across the tile (a position
    error shows), with the west edge nodata."""
    import numpy as np

    size = int(round(grid.TILE_SIZE / pixel))
    rows, cols = np.indices((size, size))
    values = 1000 * band_number + 100 * tile_index + 7 * month_number + (cols * 3 + rows * 5) % 89
    values[:, :EDGE] = NODATA
    return values.astype("int16")


def flag_mask(tile, pixel, cloud_every=None, snow_every=None):
    """FLG values: land, a water stripe, cloud/snow on every k-th row when asked, no data at the west edge."""
    import numpy as np

    size = int(round(grid.TILE_SIZE / pixel))
    flags = np.full((size, size), LAND, dtype="uint8")
    flags[:, size // 2: size // 2 + max(size // 20, 1)] = WATER
    rows = np.arange(size)
    if cloud_every:
        flags[rows % cloud_every == 0, :] = CLOUD
    if snow_every:
        flags[rows % snow_every == 1 % snow_every, :] = SNOW
    flags[:, :EDGE] = NO_DATA
    return flags


def _write(path, tile, pixel, data, nodata, block):
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": str(data.dtype), "crs": f"EPSG:{tile.epsg}", "nodata": nodata,
               "transform": from_origin(tile.ulx, tile.uly, pixel, pixel), "tiled": True,
               "blockxsize": block, "blockysize": block, "compress": "deflate"}
    with rasterio.open(path + ".part", "w", **profile) as dataset:
        dataset.write(data, 1)
    os.replace(path + ".part", path)


# ---- answering requests ------------------------------------------------------------------------------------


class DlrReplica:
    """Answers ``GET``/``HEAD`` for paths under ``root`` from the files in ``folder``.

    ``sizes``: how listings show file sizes: ``"human"`` (Apache's default, ``240M``), ``"bytes"`` or ``"none"``.
    """

    def __init__(self, folder, root=ROOT, sizes="human"):
        self.folder = os.path.abspath(folder)
        self.root = root if root.endswith("/") else root + "/"
        self.sizes = sizes

    def local_path(self, path):
        """The file or folder behind a URL path, None when it is outside the tree."""
        path = urllib.parse.unquote(path)
        if not path.startswith(self.root):
            return None
        relative = posixpath.normpath(path[len(self.root):]) if path != self.root else "."
        if relative.startswith(".."):
            return None
        return os.path.join(self.folder, relative) if relative != "." else self.folder

    def answer(self, path):
        """``(status, headers, body)`` for a URL path."""
        local = self.local_path(path)
        if local is None or not os.path.exists(local) or os.path.basename(local).startswith("."):
            return 404, {"Content-Type": "text/html"}, b"<html><body><h1>Not Found</h1></body></html>"
        if os.path.isdir(local):
            if not path.endswith("/"):  # Apache's mod_dir: folders live at a trailing slash
                return 301, {"Location": path + "/", "Content-Type": "text/html"}, b""
            return 200, {"Content-Type": "text/html;charset=UTF-8"}, self.listing(path, local).encode()
        with open(local, "rb") as stream:
            return 200, {"Content-Type": "image/tiff", "Last-Modified": "Wed, 02 Mar 2022 10:11:00 GMT"}, stream.read()

    def listing(self, path, local):
        rows = [_row("/icons/back.gif", "[PARENTDIR]", posixpath.dirname(path.rstrip("/")) + "/",
                     "Parent Directory", "&nbsp;", "  - ")]
        for name in sorted(os.listdir(local)):
            if name.startswith("."):
                continue
            full = os.path.join(local, name)
            if os.path.isdir(full):
                rows.append(_row("/icons/folder.gif", "[DIR]", name + "/", name + "/", MTIME + "  ", "  - "))
            else:
                rows.append(_row("/icons/image2.gif", "[IMG]", name, name, MTIME + "  ",
                                 self._size(os.path.getsize(full))))
        title = html.escape(urllib.parse.unquote(path))
        return (
            '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n<html>\n <head>\n'
            f"  <title>Index of {title}</title>\n </head>\n <body>\n<h1>Index of {title}</h1>\n  <table>\n"
            '   <tr><th valign="top"><img src="/icons/blank.gif" alt="[ICO]"></th><th><a href="?C=N;O=D">Name</a>'
            '</th><th><a href="?C=M;O=A">Last modified</a></th><th><a href="?C=S;O=A">Size</a></th>'
            '<th><a href="?C=D;O=A">Description</a></th></tr>\n   <tr><th colspan="5"><hr></th></tr>\n'
            + "\n".join(rows) + '\n   <tr><th colspan="5"><hr></th></tr>\n</table>\n</body></html>\n')

    def _size(self, count):
        if self.sizes == "bytes":
            return str(count)
        if self.sizes == "none":
            return "  - "
        return apache_size(count)


def apache_size(count):
    """Apache's human-readable size: 1024-based, one decimal below 10 (``9.5M``), none above (``240M``)."""
    value, unit = float(count), ""
    for next_unit in "KMGT":
        if value < 1024:
            break
        value, unit = value / 1024, next_unit
    if not unit:
        return str(count)
    return f"{value:.1f}{unit}" if value < 9.95 else f"{value:.0f}{unit}"


def _row(icon, alt, href, text, modified, size):
    # Apache's default NameWidth cuts long names in the link text: only the href has the whole name.
    shown = html.escape(text) if len(text) <= 23 else html.escape(text[:20]) + "..&gt;"
    return (f'<tr><td valign="top"><img src="{icon}" alt="{alt}"></td><td><a href="{html.escape(href)}">'
            f'{shown}</a></td><td align="right">{modified}</td>'
            f'<td align="right">{size}</td><td>&nbsp;</td></tr>')


# ---- servers -------------------------------------------------------------------------------------------------


def serve(replica, host="127.0.0.1", port=0, ranges=True):
    """Serve ``replica`` from a daemon thread; returns ``(server, root_url)``. ``server.stats`` counts requests
    and bytes sent (also at ``GET /_stats``); stop with ``server.shutdown(); server.server_close()``.
    Files are read from the requested offset only, so big (benchmark) files cost no more than the range."""
    stats = {"requests": 0, "bytes": 0}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 (http.server API name)
            path = urllib.parse.urlsplit(self.path).path
            if path == "/_stats":
                with lock:
                    body = json.dumps(stats).encode()
                return self._send(200, {"Content-Type": "application/json"}, body, count=False)
            local = replica.local_path(path)
            if local is not None and os.path.isfile(local) and not os.path.basename(local).startswith("."):
                return self._send_file(local)
            self._send(*replica.answer(path))

        do_HEAD = do_GET

        def _send_file(self, local):
            size = os.path.getsize(local)
            status, start, end = _range(self.headers.get("Range") if ranges else None, size)
            headers = {"Content-Type": "image/tiff", "Last-Modified": "Wed, 02 Mar 2022 10:11:00 GMT"}
            if ranges:
                headers["Accept-Ranges"] = "bytes"
            if status != 200:
                headers["Content-Range"] = f"bytes {start}-{end}/{size}" if status == 206 else f"bytes */{size}"
            body = b""
            if status != 416 and self.command != "HEAD":
                with open(local, "rb") as stream:
                    stream.seek(start)
                    body = stream.read(end - start + 1)
            self._send(status, headers, body, length=0 if status == 416 else end - start + 1)

        def _send(self, status, headers, body, count=True, length=None):
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            sent = 0
            if self.command != "HEAD":
                try:
                    self.wfile.write(body)
                    sent = len(body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
            if count:
                with lock:
                    stats["requests"] += 1
                    stats["bytes"] += sent

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.stats = stats
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}{replica.root}"


def _range(header, size):
    """(status, first, last) for one ``bytes=a-b`` range, as Apache answers it; no or another header: 200."""
    if not header or not header.startswith("bytes=") or "," in header:
        return 200, 0, size - 1
    first, _, last = header[len("bytes="):].strip().partition("-")
    start, end = (max(size - int(last), 0), size - 1) if first == "" else (
        int(first), min(int(last), size - 1) if last else size - 1)
    if start >= size or start > end:
        return 416, 0, -1
    return 206, start, end


def dlr_test_server(replica, ranges=True):
    """A started ``tests/servers.py`` TestServer serving ``replica``: ``.root_url`` is the ``URL`` to give the
    engine, ``.route_for(path)`` the route of a path (queue faults on it), ``.bytes_sent(prefix)`` the bytes
    written to clients (headers included) for paths starting with ``prefix``."""
    return _test_server_class()(replica, ranges).start()


@functools.lru_cache(maxsize=1)
def _test_server_class():
    from servers import Route, TestServer  # tests/servers.py imports pytest: only the tests need it

    class _Counting:
        """Wraps a handler's ``wfile`` to count what is written to the client."""

        def __init__(self, raw):
            self.raw, self.count = raw, 0

        def write(self, data):
            written = self.raw.write(data)
            self.count += len(data) if written is None else written
            return written

        def __getattr__(self, name):
            return getattr(self.raw, name)

    class DlrTestServer(TestServer):
        __test__ = False

        def __init__(self, replica, ranges):
            super().__init__()
            self.replica, self.ranges = replica, ranges
            self._dynamic = {}
            self.sent = {}  # path -> bytes written to clients

        @property
        def root_url(self):
            return self.url(self.replica.root)

        def route_for(self, path):
            with self._lock:
                if path not in self._dynamic:
                    handler = functools.partial(_answer_recorded, self.replica)
                    self._dynamic[path] = Route("GET", path, None, 200, b"", None, handler, None, self.ranges,
                                                False)
                return self._dynamic[path]

        def _find(self, request):
            found = super()._find(request)  # routes registered explicitly win
            if found is not None or request.method not in ("GET", "HEAD"):
                return found
            return self.route_for(request.path)

        def serve(self, handler):
            raw = handler.wfile
            handler.wfile = counting = _Counting(raw)
            try:
                super().serve(handler)
            finally:
                handler.wfile = raw  # keep-alive: the next request on this connection is counted afresh
                path = urllib.parse.urlsplit(handler.path).path
                with self._lock:
                    self.sent[path] = self.sent.get(path, 0) + counting.count

        def bytes_sent(self, prefix="/"):
            with self._lock:
                return sum(count for path, count in self.sent.items() if path.startswith(prefix))

        def reset_counts(self):
            with self._lock:
                self.sent.clear()
                self.requests.clear()

    return DlrTestServer


def _answer_recorded(replica, request):
    return replica.answer(request.path)


# ---- command line ------------------------------------------------------------------------------------------

# The tiles of data/demo/l3a_berlin.geojson (a minimal cover across UTM zones 32 and 33); 2021-05 is half cloud,
# 33UVU has no 2021-07 composite.
DEMO_LAYOUT = Layout(tiles=("32UQD", "33UVU"), months=("2021-04", "2021-05", "2021-06", "2021-07"),
                     bands=("B2", "B3", "B4", "B8"), clouds=(("2021-05", 2),),
                     missing=frozenset({("33UVU", "2021-07", None)}))


def arguments(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Serve a local replica of DLR's S2_L3A_WASP download tree.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (the URL printed says which)")
    parser.add_argument("--folder", default=os.path.join(_repository(), "build", "demo", "dlr-replica"),
                        help="where the tree is built (default %(default)s)")
    parser.add_argument("--tiles", default=",".join(DEMO_LAYOUT.tiles), help="default %(default)s")
    parser.add_argument("--months", default=",".join(DEMO_LAYOUT.months), help="YYYY-MM list, default %(default)s")
    parser.add_argument("--bands", default=",".join(DEMO_LAYOUT.bands), help="default %(default)s")
    parser.add_argument("--pixel", type=float, default=DEMO_LAYOUT.pixel,
                        help="pixel size of the 10 m bands in the replica, metres (default %(default)s)")
    parser.add_argument("--no-ranges", action="store_true", help="ignore Range headers (whole files only)")
    parser.add_argument("--no-build", action="store_true", help="serve --folder as it is (a prepared tree)")
    parser.add_argument("--url-file", help="also write the root URL to this file (for scripts)")
    return parser.parse_args(argv)


def _repository():
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    import signal

    args = arguments(argv)
    split = [item.strip() for item in args.tiles.split(",") if item.strip()]
    layout = dataclasses.replace(
        DEMO_LAYOUT, tiles=tuple(split), months=tuple(m.strip() for m in args.months.split(",") if m.strip()),
        bands=tuple(b.strip().upper() for b in args.bands.split(",") if b.strip()), pixel=args.pixel)
    if layout.tiles != DEMO_LAYOUT.tiles or layout.months != DEMO_LAYOUT.months:
        layout = dataclasses.replace(layout, missing=frozenset(), clouds=())
    if not args.no_build:
        build(args.folder, layout)
    server, url = serve(DlrReplica(args.folder), args.host, args.port, ranges=not args.no_ranges)
    if args.url_file:
        with open(args.url_file, "w", encoding="utf-8") as stream:
            stream.write(url + "\n")
    print(url, flush=True)
    content = "as it is" if args.no_build else (f"tiles {', '.join(layout.tiles)}, months {', '.join(layout.months)}, "
                                                f"bands {', '.join(layout.bands)}")
    print(f"DLR L3A replica: {args.folder} ({content}), Range {'off' if args.no_ranges else 'on'}, at {url}; stop "
          f"with Ctrl+C or SIGTERM", file=sys.stderr, flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
