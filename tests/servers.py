"""Scriptable HTTP servers on 127.0.0.1 for tests: a service that misbehaves on demand, and a forwarding proxy.

Network code is tested against real sockets, never by patching ``requests``. Typical use::

    from servers import http_server, faults  # noqa: F401  (the fixture is found by name)

    def test_retry(http_server):
        route = http_server.route("/data.bin", body=b"payload", ranges=True)
        route.fail(faults.status(503), faults.drop())   # the next two requests misbehave, then normal
        ...
        assert len(http_server.requests_to("/data.bin")) == 3

A route answers one method (GET routes also answer HEAD) for one path, optionally only when the query string
contains given parameters. Its body comes from bytes, a file (read at request time), or a handler function.
Each route has a queue of faults consumed one per request; when the queue is empty the route answers normally.
Every request is recorded (method, path, query, headers, body) before any fault is applied, so the number of
recorded requests is the number of attempts a client made.
"""

import http.client
import http.server
import os
import socket
import struct
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field

import pytest


@dataclass
class Recorded:
    """One request as the server (or proxy) saw it; ``headers`` is case-insensitive (an email Message)."""

    method: str
    path: str
    query: dict
    headers: object
    body: bytes
    time: float
    url: str = ""  # the absolute URL, for requests seen by the proxy


@dataclass
class Fault:
    """One misbehaviour; build them with the functions in :data:`faults`."""

    kind: str
    status: int = 0
    retry_after: object = None
    after_bytes: int = 0
    delay: float = 0.0
    chunk_size: int = 1024
    headers: dict = field(default_factory=dict)
    body: bytes = b""


class faults:  # noqa: N801 (used as a namespace: faults.drop(), faults.status(503))
    """Constructors for the misbehaviours a route can be told to perform, one request each."""

    @staticmethod
    def drop():
        """Close the connection without answering (the client sees a dropped connection)."""
        return Fault("drop")

    @staticmethod
    def reset():
        """Abort the connection with a TCP reset instead of a clean close."""
        return Fault("reset")

    @staticmethod
    def drop_mid(after_bytes):
        """Send the headers (with the full Content-Length) and ``after_bytes`` of the body, then close."""
        return Fault("drop_mid", after_bytes=after_bytes)

    @staticmethod
    def status(code, retry_after=None, body=b"", headers=None):
        """Answer ``code`` instead of the content; ``retry_after`` (seconds or an HTTP date) sets Retry-After."""
        return Fault("status", status=code, retry_after=retry_after, body=body, headers=dict(headers or {}))

    @staticmethod
    def slow(delay, chunk_size=1024):
        """Answer normally but sleep ``delay`` seconds before each ``chunk_size`` bytes of the body."""
        return Fault("slow", delay=delay, chunk_size=chunk_size)

    @staticmethod
    def stall(delay):
        """Sleep ``delay`` seconds before sending anything (a server that does not answer in time)."""
        return Fault("stall", delay=delay)

    @staticmethod
    def corrupt():
        """Answer with the right length but wrong bytes (for checksum verification)."""
        return Fault("corrupt")

    @staticmethod
    def ignore_range():
        """Answer 200 with the whole body even when the request has a Range header."""
        return Fault("ignore_range")


class Route:
    def __init__(self, method, path, query, status, body, file, handler, headers, ranges, chunked):
        self.method = method
        self.path = path
        self.query = dict(query or {})
        self.status = status
        self.body = body
        self.file = file
        self.handler = handler
        self.headers = dict(headers or {})
        self.ranges = ranges
        self.chunked = chunked
        self.faults = deque()

    def fail(self, *planned):
        """Queue faults for the next requests, in order; returns the route for chaining."""
        self.faults.extend(planned)
        return self

    def matches(self, method, path, query):
        wanted = self.method == method or (self.method == "GET" and method == "HEAD")
        return wanted and self.path == path and all(query.get(k) == v for k, v in self.query.items())

    def content(self, request):
        """(status, headers, body) of the normal answer."""
        if self.handler is not None:
            status, headers, body = self.handler(request)
            return status, dict(headers or {}), body
        if self.file is not None:
            with open(self.file, "rb") as f:
                return self.status, dict(self.headers), f.read()
        return self.status, dict(self.headers), self.body


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real services, so connection reuse is exercised

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server API name)
        self.server.owner.serve(self)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_GET


class _Threaded(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class _Base:
    """Start/stop plumbing shared by the service and the proxy."""

    handler_class = _Handler

    def __init__(self):
        self.requests = []
        self._lock = threading.Lock()
        self._httpd = _Threaded(("127.0.0.1", 0), self.handler_class)
        self._httpd.owner = self
        self._thread = None

    @property
    def port(self):
        return self._httpd.server_address[1]

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _record(self, handler, url=""):
        parsed = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        request = Recorded(
            method=handler.command,
            path=parsed.path,
            query=dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)),
            headers=handler.headers,
            body=body,
            time=time.monotonic(),
            url=url,
        )
        with self._lock:
            self.requests.append(request)
        return request


class TestServer(_Base):
    """A local HTTP service: register routes, queue faults, inspect recorded requests."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self):
        super().__init__()
        self.routes = []

    def url(self, path="/"):
        return f"http://{self.host}{path}"

    def route(self, path, body=b"", *, method="GET", query=None, status=200, file=None, handler=None,
              headers=None, ranges=True, chunked=False):
        """Register an answer; later registrations win over earlier ones for the same request.

        ``handler(request: Recorded) -> (status, headers, body)`` computes the answer per request.
        ``ranges`` honours a single ``Range: bytes=`` header with 206/Content-Range (416 when unsatisfiable).
        ``chunked`` sends the body with chunked transfer encoding instead of a Content-Length.
        """
        if isinstance(body, str):
            body = body.encode()
        route = Route(method, path, query, status, body, file, handler, headers, ranges, chunked)
        with self._lock:
            self.routes.append(route)
        return route

    def unroute(self, route):
        """Forget a registration (a test's change to a server other tests share)."""
        with self._lock:
            self.routes.remove(route)

    def requests_to(self, path, method=None):
        return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def serve(self, handler):
        request = self._record(handler)
        route = self._find(request)
        if route is None:
            return _answer(handler, 404, {"Content-Type": "text/plain"}, b"not found")
        fault = route.faults.popleft() if route.faults else None
        if fault is not None and fault.kind in ("drop", "reset"):
            return _abort(handler, reset=fault.kind == "reset")
        if fault is not None and fault.kind == "stall":
            time.sleep(fault.delay)
        if fault is not None and fault.kind == "status":
            return _answer(handler, fault.status, _fault_headers(fault), fault.body)
        status, headers, body = route.content(request)
        if fault is not None and fault.kind == "corrupt":
            body = bytes(b ^ 0xFF for b in body)
        if route.ranges and status == 200 and not (fault and fault.kind == "ignore_range"):
            status, headers, body = _apply_range(handler.headers.get("Range"), status, headers, body)
        headers.setdefault("Content-Type", "application/octet-stream")
        if fault is not None and fault.kind == "drop_mid":
            return _answer(handler, status, headers, body[: fault.after_bytes], length=len(body), close=True)
        if fault is not None and fault.kind == "slow":
            return _answer(handler, status, headers, body, chunk_size=fault.chunk_size, delay=fault.delay)
        return _answer(handler, status, headers, body, chunked=route.chunked)

    def _find(self, request):
        with self._lock:
            for route in reversed(self.routes):
                if route.matches(request.method, request.path, request.query):
                    return route
        return None


def _fault_headers(fault):
    headers = {"Content-Type": "text/plain", **fault.headers}
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    return headers


def _apply_range(range_header, status, headers, body):
    """Honour one ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range as real object stores do."""
    headers["Accept-Ranges"] = "bytes"
    if not range_header or not range_header.startswith("bytes=") or "," in range_header:
        return status, headers, body
    first, _, last = range_header[len("bytes="):].strip().partition("-")
    size = len(body)
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        headers["Content-Range"] = f"bytes */{size}"
        return 416, headers, b""
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return 206, headers, body[start: end + 1]


def _answer(handler, status, headers, body, *, length=None, close=False, chunked=False, chunk_size=0,
            delay=0.0):
    """Write a response; ``length`` may promise more bytes than ``body`` holds (then the connection closes)."""
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    if chunked:
        handler.send_header("Transfer-Encoding", "chunked")
    else:
        handler.send_header("Content-Length", str(len(body) if length is None else length))
    if close:
        handler.send_header("Connection", "close")
        handler.close_connection = True
    handler.end_headers()
    if handler.command == "HEAD":
        return
    try:
        if chunked:
            _write_chunked(handler, body)
        else:
            _write_slowly(handler, body, chunk_size or len(body) or 1, delay)
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True  # the client gave up (e.g. its read timeout): nothing to do
        return
    if close:
        _abort(handler)


def _write_slowly(handler, body, chunk_size, delay):
    for start in range(0, len(body), chunk_size):
        if delay:
            time.sleep(delay)
        handler.wfile.write(body[start: start + chunk_size])
        handler.wfile.flush()


def _write_chunked(handler, body, chunk_size=4096):
    for start in range(0, len(body), chunk_size):
        piece = body[start: start + chunk_size]
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    handler.wfile.write(b"0\r\n\r\n")


def _abort(handler, reset=False):
    """Close the client's connection now; with ``reset`` the peer gets ECONNRESET instead of EOF."""
    handler.close_connection = True
    sock = handler.connection
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    if reset:
        sock.close()


class _ProxyHandler(_Handler):
    def do_CONNECT(self):  # noqa: N802 (http.server API name)
        # HTTPS tunnelling is not needed by the local tests (all plain HTTP); say so clearly.
        self.server.owner._record(self, url=self.path)
        _answer(self, 501, {"Content-Type": "text/plain"}, b"CONNECT not supported by the test proxy")


class TestProxy(_Base):
    """A forwarding HTTP proxy for absolute-URI requests (``GET http://host/path``) that records what it relays.

    ``require_auth=(user, password)`` answers 407 unless the client sends matching Proxy-Authorization.
    """

    __test__ = False
    handler_class = _ProxyHandler

    def __init__(self, require_auth=None):
        super().__init__()
        self.require_auth = require_auth

    @property
    def url(self):
        return f"http://{self.host}"

    def serve(self, handler):
        request = self._record(handler, url=handler.path)
        target = urllib.parse.urlsplit(handler.path)
        if target.scheme != "http" or not target.hostname:
            return _answer(handler, 400, {"Content-Type": "text/plain"}, b"absolute http:// URI expected")
        if self.require_auth and handler.headers.get("Proxy-Authorization") != _basic(*self.require_auth):
            return _answer(handler, 407, {"Proxy-Authenticate": 'Basic realm="test"'}, b"")
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(handler.command, path or "/", body=request.body or None, headers=headers)
            reply = upstream.getresponse()
            body = reply.read()
            relayed = {k: v for k, v in reply.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}}
            _answer(handler, reply.status, relayed, body)
        except OSError as error:
            _answer(handler, 502, {"Content-Type": "text/plain"}, f"upstream failed: {error}".encode())
        finally:
            upstream.close()


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer",
               "transfer-encoding", "upgrade"}


def _basic(user, password):
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def http_server():
    """A fresh :class:`TestServer` per test (no routes, no recorded requests)."""
    with TestServer() as server:
        yield server


@pytest.fixture
def http_proxy():
    """A fresh :class:`TestProxy` per test."""
    with TestProxy() as proxy:
        yield proxy


def fixture_path(*parts):
    """Path of a file under ``../shared/fixtures`` (real service responses to replay)."""
    return os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures", *parts))
