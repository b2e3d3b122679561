"""Serve the local Copernicus Data Space OData replica (tests/replicas/odata.py) until killed.

For `make demo` and manual tries: generated products in the service's JSON shape for the given tiles and
period. Prints the OData root URL (what `sentinel2:search` takes as URL) on stdout, details on stderr:

    python scripts/replica.py --port 8765 &
    qgis_process run sentinel2:search -- CATALOG=cdse URL=http://127.0.0.1:8765/odata/v1 ...
"""

import argparse
import datetime as dt
import os
import signal
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import conftest  # noqa: E402,F401  (links the repository as the `sentinel2_pipeline` package)
from replicas import odata  # noqa: E402

DEMO_TILES = "30TYP,31TCJ"  # the tiles of data/demo/gers_toulouse.geojson


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (the URL printed says which)")
    parser.add_argument("--root", default=odata.ROOT, help="path of the OData root (default %(default)s)")
    parser.add_argument("--tiles", default=DEMO_TILES, help="comma-separated tile ids (default %(default)s)")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2023, 6, 1))
    parser.add_argument("--end", type=dt.date.fromisoformat, default=dt.date(2023, 8, 31))
    parser.add_argument("--every-days", type=int, default=5, help="days between acquisitions (default 5)")
    parser.add_argument("--levels", default="L1C,L2A", help="product levels (default %(default)s)")
    parser.add_argument("--url-file", help="also write the URL to this file (for scripts)")
    return parser.parse_args(argv)


def main(argv=None):
    args = arguments(argv)
    tiles = [t.strip().upper().lstrip("T") if len(t.strip()) == 6 else t.strip().upper()
             for t in args.tiles.split(",") if t.strip()]
    levels = tuple(level.strip().upper() for level in args.levels.split(",") if level.strip())
    products = odata.generate_products(tiles, args.start, args.end, args.every_days, levels)
    server, url = odata.serve(odata.ODataReplica(products), args.host, args.port, args.root)
    if args.url_file:
        with open(args.url_file, "w", encoding="utf-8") as stream:
            stream.write(url + "\n")
    print(url, flush=True)
    print(f"OData replica: {len(products)} products ({', '.join(tiles)}; {args.start} to {args.end}; "
          f"{', '.join(levels)}) at {url}/Products; stop with Ctrl+C or SIGTERM", file=sys.stderr, flush=True)
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
