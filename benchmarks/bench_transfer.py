"""The download engine (plugin.engine.transfer) over loopback, against baselines run in the same command.

1. One 200 MB body: our throughput as a ratio of ``curl -s -o`` on the same URL (target >= 0.8x); with MD5
   verification (hashed while streaming) against ``curl -s -o`` followed by ``md5sum`` (target >= 1.0x) and
   against plain curl (target >= 0.9x).
2. Eight 50 MB products from a server that limits each connection to 20 MB/s (CDSE's per-connection limit):
   PARALLEL=4 against PARALLEL=1 (target >= 3x).
3. Resume after an interruption (cancel) at 50 %: body bytes the server sent in the second run, as a share
   of the file (target <= 55 %).

The server runs in a child process (so it does not share our interpreter lock, and curl faces the same
server): a threaded HTTP/1.1 server with Range support that sends files with ``sendfile`` or, with
``?rate=``, in paced 64 KiB writes; ``/stats`` returns the body bytes it sent so far.

    python benchmarks/bench_transfer.py
"""

import hashlib
import http.server
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build", "pluginpath"))

MB = 1_000_000
RATE = 20 * MB


# ---- the server (child process) -------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sent = 0
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server API name)
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/stats":
            return self._small(json.dumps({"sent": _Handler.sent}).encode())
        path = os.path.join(self.server.folder, os.path.basename(url.path))
        rate = float(dict(urllib.parse.parse_qsl(url.query)).get("rate", 0))
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            start = self._range_start(size)
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.send_header("Content-Length", str(size - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            try:
                self._paced(f, start, size, rate) if rate else self._sendfile(f, start, size)
            except OSError:
                self.close_connection = True  # the client went away (a cancel)

    def _range_start(self, size):
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        return min(int(match.group(1)), size) if match else 0

    def _sendfile(self, f, offset, size):
        self.wfile.flush()
        while offset < size:
            count = os.sendfile(self.connection.fileno(), f.fileno(), offset, size - offset)
            offset += count
            self._count(count)

    def _paced(self, f, offset, size, rate):
        f.seek(offset)
        due = time.monotonic()
        while offset < size:
            block = f.read(min(65536, size - offset))
            due += len(block) / rate
            time.sleep(max(due - time.monotonic(), 0))
            self.wfile.write(block)
            offset += len(block)
            self._count(len(block))

    def _count(self, count):
        with _Handler.lock:
            _Handler.sent += count

    def _small(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(folder):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.folder = folder
    print(server.server_address[1], flush=True)
    server.serve_forever()


# ---- the measurements (parent) ----------------------------------------------------------------------------


def make_file(path, size):
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for start in range(0, size, len(block)):
            f.write(block[: size - start])


def sent(base):
    with urllib.request.urlopen(base + "/stats") as answer:
        return json.load(answer)["sent"]


def best_of(runs, function):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def hash_file(path, hasher):
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def md5_speed():
    """MB/s of hashlib's MD5 on this CPU: the ceiling of any MD5-verified download."""
    block, digest = os.urandom(1 << 20), hashlib.md5()
    started = time.perf_counter()
    for _ in range(200):
        digest.update(block)
    return 200 / (time.perf_counter() - started)


def bench_single_body(base, out, session, transfer, source):
    url, size = base + "/body200", 200 * MB
    dest = os.path.join(out, "body200")

    def curl():
        subprocess.run(["curl", "-s", "-o", dest, url], check=True)
        os.remove(dest)

    def ours(with_checksum=""):
        transfer.fetch_to_file(url, dest, session, size=size, checksum=with_checksum)
        os.remove(dest)

    def curl_md5sum():  # what a script does: download, then read the file again to check it
        subprocess.run(["curl", "-s", "-o", dest, url], check=True)
        subprocess.run(["md5sum", dest], check=True, stdout=subprocess.DEVNULL)
        os.remove(dest)

    checksum = "MD5:" + hash_file(source, hashlib.md5())
    curl_s, ours_s = best_of(3, curl), best_of(3, ours)
    curl_md5_s, md5_s = best_of(3, curl_md5sum), best_of(3, lambda: ours(checksum))
    print(f"single 200 MB body: curl {size / curl_s / MB:.0f} MB/s, ours {size / ours_s / MB:.0f} MB/s "
          f"(ratio {curl_s / ours_s:.2f}x, target >= 0.8x)")
    print(f"verified 200 MB body: curl -o + md5sum {size / curl_md5_s / MB:.0f} MB/s, ours hashing while streaming "
          f"{size / md5_s / MB:.0f} MB/s (ratio {curl_md5_s / md5_s:.2f}x, target >= 1.0x; against plain curl "
          f"{curl_s / md5_s:.2f}x, target >= 0.9x; MD5 alone runs at {md5_speed():.0f} MB/s on this CPU)")
    try:
        import blake3
    except ImportError:
        print("verified with BLAKE3: not measured (the Python package 'blake3' is not installed)")
        return
    b3 = "BLAKE3:" + hash_file(source, blake3.blake3())
    b3_s = best_of(3, lambda: ours(b3))
    print(f"verified with BLAKE3 (CDSE lists it; used when 'blake3' is installed): ours {size / b3_s / MB:.0f} MB/s "
          f"(against curl -o + md5sum {curl_md5_s / b3_s:.2f}x, target >= 1.0x; against plain curl "
          f"{curl_s / b3_s:.2f}x, target >= 0.9x)")


def bench_parallel(base, out, session, transfer):
    def batch(parallel):
        folder = tempfile.mkdtemp(dir=out)
        jobs = [transfer.Transfer(f"{base}/p50?rate={RATE}&n={i}", os.path.join(folder, f"S2_{i}.zip"), 50 * MB)
                for i in range(8)]
        started = time.perf_counter()
        report = transfer.download_all(jobs, session, parallel=parallel)
        elapsed = time.perf_counter() - started
        assert len(report.downloaded) == 8, report.lines()
        shutil.rmtree(folder)
        return elapsed

    four, one = batch(4), batch(1)
    print(f"eight 50 MB products at {RATE / MB:.0f} MB/s per connection: PARALLEL=1 {one:.1f} s, PARALLEL=4 "
          f"{four:.1f} s (ratio {one / four:.2f}x, target >= 3x)")


def bench_resume(base, out, session, transfer):
    from sentinel2_pipeline.plugin.engine.errors import Cancelled

    size = 100 * MB
    dest = os.path.join(out, "resumed")
    job = transfer.Transfer(f"{base}/p100?rate={40 * MB}", dest, size)
    part = job.part
    try:
        transfer.download_all([job], session, is_cancelled=lambda: os.path.getsize(part) >= size // 2
                              if os.path.exists(part) else False)
    except Cancelled:
        pass
    kept = os.path.getsize(part)
    before = sent(base)
    report = transfer.download_all([job], session)
    second = sent(base) - before
    assert len(report.downloaded) == 1, report.lines()
    print(f"resume after a cancel at {kept / size:.0%}: second run transferred {second / MB:.1f} MB = "
          f"{second / size:.1%} of the file (target <= 55 %)")


def main():
    from sentinel2_pipeline.plugin.engine import http, transfer
    files = tempfile.mkdtemp(prefix="bench-transfer-src-")
    out = tempfile.mkdtemp(prefix="bench-transfer-out-")
    make_file(os.path.join(files, "body200"), 200 * MB)
    make_file(os.path.join(files, "p50"), 50 * MB)
    make_file(os.path.join(files, "p100"), 100 * MB)
    server = subprocess.Popen([sys.executable, __file__, "--serve", files], stdout=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        session = http.new_session()
        bench_single_body(base, out, session, transfer, os.path.join(files, "body200"))
        bench_parallel(base, out, session, transfer)
        bench_resume(base, out, session, transfer)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of the benchmark process (client side): {rss:.0f} MB")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(files)
        shutil.rmtree(out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        main()
