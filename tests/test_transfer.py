"""The download engine (plugin.engine.transfer) against real local HTTP servers that misbehave on purpose.

Bodies are a few MB of deterministic pseudo-random bytes, so resume offsets, checksums and byte counts are
real. The server here is tests/servers.py's TestServer with two measurements added: the body bytes it wrote
per request and the peak number of requests it was serving at once.
"""

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from conftest import PLUGIN_PATH, tracked_session
from servers import TestServer, faults

from sentinel2_pipeline.plugin.engine import transfer
from sentinel2_pipeline.plugin.engine.errors import Cancelled, ParameterError, ServiceError
from sentinel2_pipeline.plugin.engine.transfer import CHUNK, Transfer, download_all, fetch_to_file

MB = 1_000_000


def payload(size, seed=1):
    return random.Random(seed).randbytes(size)


def md5(data):
    return "MD5:" + hashlib.md5(data).hexdigest()


@dataclass
class Served:
    """One response as the server wrote it: when it started, the Range asked for, the body bytes written."""

    start: float
    range: str
    body: int = 0


class _CountingWriter:
    """Wraps a handler's wfile: the first write of a response is its header block, the rest is body."""

    def __init__(self, inner, served):
        self.inner = inner
        self.served = served
        self.headers_written = False

    def write(self, data):
        written = self.inner.write(data)
        if self.headers_written:
            self.served.body += len(data)
        self.headers_written = True
        return written

    def flush(self):
        self.inner.flush()


class CountingServer(TestServer):
    __test__ = False

    def __init__(self):
        super().__init__()
        self.served = []
        self.active = 0
        self.peak = 0

    def serve(self, handler):
        served = Served(time.monotonic(), handler.headers.get("Range") or "")
        original = handler.wfile
        handler.wfile = _CountingWriter(original, served)
        with self._lock:
            self.served.append(served)
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            super().serve(handler)
        finally:
            handler.wfile = original
            with self._lock:
                self.active -= 1

    def body_bytes(self, since=0.0):
        return sum(s.body for s in self.served if s.start >= since)


@pytest.fixture
def server():
    with CountingServer() as running:
        yield running


def session(**kwargs):
    """The production session factory; tests that observe the engine's own retries pass ``retries=0``."""
    return tracked_session(**{"timeout": 5, **kwargs})


@contextmanager
def watch(folder, finals):
    """Record, while the block runs, every time a final file exists in ``folder`` and whether its bytes are
    the expected ones (``finals``: name -> bytes): a final name must never hold unverified bytes."""
    seen = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            for name in os.listdir(folder):
                if name in finals:
                    try:
                        with open(os.path.join(folder, name), "rb") as f:
                            seen.append((name, f.read() == finals[name]))
                    except FileNotFoundError:
                        pass
            time.sleep(0.005)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def run(transfers, **kwargs):
    kwargs.setdefault("backoff", 0.02)
    logs = kwargs.setdefault("log", [])
    kwargs["log"] = logs.append
    report = download_all(transfers, kwargs.pop("session", None) or session(retries=0), **kwargs)
    return report, logs


def one_sentence(text):
    return text.endswith(".") and "\n" not in text and "Traceback" not in text


# ---- batches, checksums, parallelism ---------------------------------------------------------------------


def test_parallel_batch_completes_verified_with_bounded_connections(server, tmp_path):
    bodies = {f"S2A_{i}.zip": payload(2 * MB, seed=i) for i in range(8)}
    for name, body in bodies.items():
        # Slow enough that the eight downloads overlap, so the bound is really exercised.
        server.route(f"/{name}", body).fail(faults.slow(0.03, 256 * 1024))
    jobs = [Transfer(server.url(f"/{n}"), tmp_path / n, len(b), md5(b)) for n, b in bodies.items()]
    reports = []
    with watch(tmp_path, bodies) as seen:
        report, logs = run(jobs, parallel=4, session=session(), progress=lambda f, m: reports.append((f, m)))
    assert [o.status for o in report.outcomes] == ["downloaded"] * 8
    assert all((tmp_path / n).read_bytes() == b for n, b in bodies.items())
    assert not list(tmp_path.glob("*.part"))
    assert server.peak == 4  # never more than PARALLEL at once, and really parallel
    assert report.received == 16 * MB and all(ok for _, ok in seen)
    assert reports[-1] == (1.0, "16.0 of 16.0 MB, 8 of 8 files")
    assert len(logs) == 8 and all(line.startswith("Downloaded S2A_") for line in logs)


def test_drops_at_random_offsets_resume_with_range(server, tmp_path):
    body = payload(4 * MB)
    rng = random.Random(7)
    drops = [rng.randrange(100_000, 1 * MB) for _ in range(3)]
    route = server.route("/p.zip", body)
    route.fail(*[faults.drop_mid(n) for n in drops])
    report, _ = run([Transfer(server.url("/p.zip"), tmp_path / "p.zip", len(body), md5(body))])
    assert report.outcomes[0].status == "downloaded" and (tmp_path / "p.zip").read_bytes() == body
    starts = [int(s.range[len("bytes="):-1]) for s in server.served[1:]]
    assert len(starts) == 3 and starts == sorted(starts) and starts[0] > 0  # each resume starts further
    assert server.body_bytes() <= len(body) + len(drops) * CHUNK  # at most one chunk lost per drop


def test_drops_are_retried_through_the_default_session_too(server, tmp_path):
    body = payload(2 * MB)
    server.route("/p.zip", body).fail(faults.drop_mid(300_000), faults.reset(), faults.drop_mid(500_000))
    report, _ = run([Transfer(server.url("/p.zip"), tmp_path / "p.zip", None, md5(body))], session=session())
    assert report.outcomes[0].status == "downloaded" and (tmp_path / "p.zip").read_bytes() == body


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    body = payload(3 * MB)
    server.route("/p.zip", body).fail(faults.drop_mid(1_500_000), faults.ignore_range())
    report, logs = run([Transfer(server.url("/p.zip"), tmp_path / "p.zip", len(body), md5(body))])
    assert report.outcomes[0].status == "downloaded" and (tmp_path / "p.zip").read_bytes() == body
    assert server.served[1].range.startswith("bytes=") and len(server.served) == 2
    assert any("ignored the Range request" in line for line in logs)


def test_range_answer_for_other_bytes_is_not_appended(server, tmp_path):
    body = payload(2 * MB)
    calls = []

    def wrong_range(request):  # answers every Range with the bytes from 0, labelled honestly
        calls.append(request.headers.get("Range"))
        if request.headers.get("Range") and len(calls) == 2:
            return 206, {"Content-Range": f"bytes 0-{len(body) - 1}/{len(body)}"}, body
        return 200, {}, body

    server.route("/p.zip", handler=wrong_range, ranges=False).fail(faults.drop_mid(700_000))
    report, _ = run([Transfer(server.url("/p.zip"), tmp_path / "p.zip", len(body), md5(body))])
    assert report.outcomes[0].status == "downloaded" and (tmp_path / "p.zip").read_bytes() == body
    assert calls == [None, "bytes=700000-", None]  # the third attempt restarted without Range


def test_corrupt_copy_is_downloaded_again(server, tmp_path):
    body = payload(1 * MB)
    server.route("/p.zip", body).fail(faults.corrupt())
    report, logs = run([Transfer(server.url("/p.zip"), tmp_path / "p.zip", len(body), md5(body))])
    assert report.outcomes[0].status == "downloaded" and (tmp_path / "p.zip").read_bytes() == body
    assert len(server.served) == 2 and any("checksum mismatch" in line for line in logs)


def test_always_corrupt_fails_with_a_sentence_and_never_a_final_file(server, tmp_path):
    body = payload(1 * MB)
    server.route("/S2B_BAD.zip", body).fail(*[faults.corrupt()] * 10)
    job = Transfer(server.url("/S2B_BAD.zip"), tmp_path / "S2B_BAD.zip", len(body), md5(body))
    with watch(tmp_path, {"S2B_BAD.zip": body}) as seen:
        report, _ = run([job])
    failure = report.outcomes[0]
    assert failure.status == "failed" and one_sentence(failure.reason)
    assert failure.reason.startswith("S2B_BAD.zip: checksum mismatch (MD5 expected")
    assert "in 3 downloads" in failure.reason and len(server.served) == 3
    assert seen == [] and os.listdir(tmp_path) == []


def test_wrong_size_fails_without_a_final_file(server, tmp_path):
    body = payload(500_000)
    server.route("/p.zip", body)
    report, _ = run([Transfer(server.url("/p.zip"), tmp_path / "p.zip", len(body) + 1)])
    assert report.outcomes[0].status == "failed" and "the catalogue says 500001" in report.outcomes[0].reason
    assert os.listdir(tmp_path) == []


# ---- statuses --------------------------------------------------------------------------------------------


def test_429_retry_after_is_honoured(server, tmp_path):
    body = payload(200_000)
    server.route("/p.zip", body).fail(faults.status(429, retry_after=1))
    report, logs = run([Transfer(server.url("/p.zip"), tmp_path / "p.zip", len(body), md5(body))])
    assert report.outcomes[0].status == "downloaded"
    requests = server.requests_to("/p.zip")
    assert len(requests) == 2 and requests[1].time - requests[0].time >= 0.95
    assert any("retrying in 1.0 s" in line for line in logs)


def test_503_then_ok(server, tmp_path):
    body = payload(200_000)
    server.route("/p.zip", body).fail(faults.status(503), faults.status(502))
    report, _ = run([Transfer(server.url("/p.zip"), tmp_path / "p.zip", len(body), md5(body))])
    assert report.outcomes[0].status == "downloaded" and len(server.requests_to("/p.zip")) == 3


def test_503_for_ever_fails_after_the_attempts(server, tmp_path):
    server.route("/S2A_X.zip", b"x").fail(*[faults.status(503)] * 10)
    report, _ = run([Transfer(server.url("/S2A_X.zip"), tmp_path / "S2A_X.zip", 1)], attempts=3)
    reason = report.outcomes[0].reason
    assert report.outcomes[0].status == "failed" and one_sentence(reason)
    assert reason.startswith("S2A_X.zip: gave up after 3 attempts") and "HTTP 503" in reason
    assert len(server.requests_to("/S2A_X.zip")) == 3


def test_404_fails_at_once_and_fetch_to_file_raises(server, tmp_path):
    with pytest.raises(ServiceError) as raised:
        fetch_to_file(server.url("/missing.tif"), tmp_path / "dem.tif", session(retries=0))
    assert str(raised.value).startswith("dem.tif: 127.0.0.1 has nothing at") and one_sentence(str(raised.value))
    assert len(server.requests_to("/missing.tif")) == 1 and os.listdir(tmp_path) == []


def test_401_refreshes_credentials_and_resumes_each_time_a_token_expires(server, tmp_path):
    body = payload(3 * MB)
    tokens = {"valid": 1, "current": 1}
    refreshes = []

    def guarded(request):  # every token serves one request and then expires, like a 10-minute CDSE token
        if request.headers.get("Authorization") != f"Bearer token-{tokens['valid']}-abcdefgh":
            return 401, {"Content-Type": "application/json"}, b'{"detail": "Expired signature"}'
        tokens["valid"] += 1
        return 200, {}, body

    def refresh():
        refreshes.append(time.monotonic())
        tokens["current"] += 1

    as_is = faults.slow(0, len(body))  # the 401 answers take a turn in the fault queue
    server.route("/p.zip", handler=guarded).fail(faults.drop_mid(1_200_000), as_is, faults.drop_mid(800_000), as_is)
    job = Transfer(server.url("/p.zip"), tmp_path / "p.zip", len(body), md5(body),
                   auth=lambda url: {"Authorization": f"Bearer token-{tokens['current']}-abcdefgh"})
    report, logs = run([job], on_unauthorized=refresh)
    assert report.outcomes[0].status == "downloaded" and (tmp_path / "p.zip").read_bytes() == body
    assert len(refreshes) == 2
    seen = [(r.headers["Authorization"][7:14], r.headers.get("Range")) for r in server.requests_to("/p.zip")]
    assert seen == [("token-1", None), ("token-1", "bytes=1200000-"), ("token-2", "bytes=1200000-"),
                    ("token-2", "bytes=2000000-"), ("token-3", "bytes=2000000-")]
    assert not any("token-" in line for line in logs)


def test_parallel_workers_refused_together_refresh_once(server, tmp_path):
    body = payload(500_000)
    tokens = {"current": "old"}
    refreshes = []

    def guarded(request):
        if request.headers.get("Authorization") != "Bearer new":
            return 401, {}, b""
        return 200, {}, body

    def refresh():
        refreshes.append(1)
        time.sleep(0.2)  # a token request takes a while: the other workers' 401s arrive meanwhile
        tokens["current"] = "new"

    for i in range(4):
        server.route(f"/{i}.zip", handler=guarded)
    jobs = [Transfer(server.url(f"/{i}.zip"), tmp_path / f"{i}.zip", len(body), md5(body),
                     auth=lambda url: {"Authorization": f"Bearer {tokens['current']}"}) for i in range(4)]
    report, _ = run(jobs, parallel=4, on_unauthorized=refresh)
    assert [o.status for o in report.outcomes] == ["downloaded"] * 4
    assert len(refreshes) == 1 and sum(r.headers["Authorization"] == "Bearer old" for r in server.requests) == 4


def test_401_again_after_refresh_fails_with_a_sentence(server, tmp_path):
    server.route("/p.zip", status=401, body=b"")
    calls = []
    report, _ = run([Transfer(server.url("/p.zip"), tmp_path / "p.zip", 10)], on_unauthorized=lambda: calls.append(1))
    assert calls == [1] and report.outcomes[0].status == "failed"
    assert "refused access (HTTP 401" in report.outcomes[0].reason and len(server.requests_to("/p.zip")) == 2


def test_redirect_keeps_the_token_only_where_auth_gives_it(server, tmp_path):
    body = payload(100_000)
    with CountingServer() as elsewhere:
        elsewhere.route("/zipper/p.zip", body)
        server.route("/p.zip", status=301, headers={"Location": elsewhere.url("/zipper/p.zip")})

        def auth(url):  # what the CDSE source does: the token only for its own hosts
            return {"Authorization": "Bearer secret-token"} if url.startswith(server.url()) else {}

        report, _ = run([Transfer(server.url("/p.zip"), tmp_path / "p.zip", len(body), md5(body), auth=auth)])
        assert report.outcomes[0].status == "downloaded"
        assert server.requests_to("/p.zip")[0].headers["Authorization"] == "Bearer secret-token"
        assert "Authorization" not in elsewhere.requests_to("/zipper/p.zip")[0].headers


# ---- skip, cancel, resume across runs ------------------------------------------------------------------------


def test_complete_files_are_skipped_without_a_request(server, tmp_path):
    body = payload(300_000)
    server.route("/a.zip", body)
    server.route("/b.zip", body)
    server.route("/c.zip", body)
    for name in ("a.zip", "b.zip", "c.zip"):
        (tmp_path / name).write_bytes(body)
    jobs = [Transfer(server.url("/a.zip"), tmp_path / "a.zip", len(body), md5(body)),  # checksum
            Transfer(server.url("/b.zip"), tmp_path / "b.zip", len(body)),  # size only
            Transfer(server.url("/c.zip"), tmp_path / "c.zip")]  # nothing known: one HEAD
    report, _ = run(jobs)
    assert [o.status for o in report.outcomes] == ["skipped"] * 3
    assert [r.method for r in server.requests] == ["HEAD"] and server.requests[0].path == "/c.zip"


def test_existing_wrong_file_is_replaced(server, tmp_path):
    body = payload(300_000)
    server.route("/a.zip", body)
    (tmp_path / "a.zip").write_bytes(body[:-1] + b"!")
    report, logs = run([Transfer(server.url("/a.zip"), tmp_path / "a.zip", len(body), md5(body))])
    assert report.outcomes[0].status == "downloaded" and (tmp_path / "a.zip").read_bytes() == body
    assert any("does not match its MD5 checksum" in line for line in logs)


def test_cancel_leaves_a_part_that_the_next_run_resumes(server, tmp_path):
    body = payload(3 * MB)
    server.route("/p.zip", body).fail(faults.slow(0.04, 128 * 1024))
    part = tmp_path / "p.zip.part"
    job = Transfer(server.url("/p.zip"), tmp_path / "p.zip", len(body), md5(body))
    with pytest.raises(Cancelled):
        run([job], is_cancelled=lambda: part.exists() and part.stat().st_size >= CHUNK)
    kept = part.stat().st_size
    assert CHUNK <= kept < len(body) and not (tmp_path / "p.zip").exists()
    second_run = time.monotonic()
    report, _ = run([job])
    assert report.outcomes[0].status == "downloaded" and (tmp_path / "p.zip").read_bytes() == body
    assert server.served[-1].range == f"bytes={kept}-"
    assert server.body_bytes(since=second_run) == len(body) - kept


def test_cancel_during_a_stalled_body_returns_within_two_seconds(server, tmp_path):
    body = payload(1 * MB)
    for name in ("a", "b"):
        server.route(f"/{name}.zip", body).fail(faults.slow(30, len(body)))  # headers, then nothing for 30 s
    cancel_at = time.monotonic() + 0.5
    jobs = [Transfer(server.url(f"/{n}.zip"), tmp_path / f"{n}.zip", len(body)) for n in ("a", "b")]
    with pytest.raises(Cancelled):
        run(jobs, session=session(timeout=60), is_cancelled=lambda: time.monotonic() >= cancel_at)
    assert time.monotonic() - cancel_at < 2.0
    while any(t.name.startswith("s2-transfer") for t in threading.enumerate()):
        assert time.monotonic() - cancel_at < 2.0, "a worker is still running"
        time.sleep(0.02)
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "b.zip").exists()


# ---- disk space, BLAKE3 --------------------------------------------------------------------------------------


def test_not_enough_disk_space_is_one_sentence_before_any_request(server, tmp_path):
    server.route("/huge.zip", b"x")
    with pytest.raises(ParameterError) as raised:
        run([Transfer(server.url("/huge.zip"), tmp_path / "huge.zip", 10**18)])
    message = str(raised.value)
    assert message.startswith("OUTPUT_FOLDER: the downloads need 1000000000.0 GB but only ") and one_sentence(message)
    assert str(tmp_path) in message and server.requests == []
    with pytest.raises(ParameterError):
        transfer.check_free_space(str(tmp_path), 10**18)
    transfer.check_free_space(str(tmp_path), 1)


def test_blake3_checksum_is_verified_with_the_package(server, tmp_path):
    import blake3  # a dev requirement: the accelerated route is tested, not skipped
    body = payload(200_000)
    server.route("/good.zip", body)
    server.route("/bad.zip", body)
    good = "BLAKE3:" + blake3.blake3(body).hexdigest()
    report, _ = run([Transfer(server.url("/good.zip"), tmp_path / "good.zip", len(body), good),
                     Transfer(server.url("/bad.zip"), tmp_path / "bad.zip", len(body), "BLAKE3:" + "0" * 64)])
    assert [o.status for o in report.outcomes] == ["downloaded", "failed"]
    assert (tmp_path / "good.zip").read_bytes() == body and not (tmp_path / "bad.zip").exists()


def test_blake3_checksum_without_the_package_falls_back_to_size_once(server, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "blake3", None)  # what a QGIS without the package sees: ImportError
    body = payload(200_000)
    server.route("/a.zip", body)
    server.route("/b.zip", body)
    wrong = "BLAKE3:" + "0" * 64
    report, logs = run([Transfer(server.url(f"/{n}.zip"), tmp_path / f"{n}.zip", len(body), wrong) for n in "ab"])
    assert [o.status for o in report.outcomes] == ["downloaded"] * 2
    assert sum("BLAKE3 checksums cannot be checked" in line for line in logs) == 1


def test_checksum_format_is_validated():
    with pytest.raises(ValueError):
        Transfer("http://x/a", "/tmp/a", checksum="CRC32:abcd")
    assert Transfer("http://x/a", "/tmp/a", 0, "md5:ABCD").checksum == "MD5:abcd"


# ---- SIGKILL mid-transfer ------------------------------------------------------------------------------------

KILLED_RUN = """
import sys
sys.path.insert(0, {plugin_path!r})
from sentinel2_pipeline.plugin.engine import http, transfer
transfer.fetch_to_file({url!r}, {dest!r}, http.new_session(), size={size}, checksum={checksum!r})
"""


def test_sigkill_mid_transfer_then_the_next_run_completes_without_duplicate_bytes(server, tmp_path):
    body = payload(4 * MB)
    server.route("/S2A_KILL.zip", body).fail(faults.slow(0.03, 64 * 1024))
    dest, part = tmp_path / "S2A_KILL.zip", tmp_path / "S2A_KILL.zip.part"
    code = KILLED_RUN.format(plugin_path=PLUGIN_PATH, url=server.url("/S2A_KILL.zip"), dest=str(dest),
                             size=len(body), checksum=md5(body))
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while not (part.exists() and part.stat().st_size >= CHUNK) and time.monotonic() < deadline:
        assert child.poll() is None, "the child ended before it could be killed"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    remaining = len(body) - part.stat().st_size
    assert 0 < remaining < len(body) and not dest.exists()
    second_run = time.monotonic()
    assert fetch_to_file(server.url("/S2A_KILL.zip"), dest, session(), len(body), md5(body)) == str(dest)
    assert dest.read_bytes() == body and not part.exists()
    assert server.served[-1].range == f"bytes={len(body) - remaining}-"
    assert server.body_bytes(since=second_run) <= remaining + CHUNK
