"""A real S3-compatible server for tests: moto's standalone server in its own process on 127.0.0.1, and a gate in
front of it that misbehaves on purpose (5xx answers, Retry-After, dropped connections) for chosen requests."""

import contextlib
import http.client
import http.server
import socket
import subprocess
import sys
import threading
import time

REGION = "eu-central-1"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(port, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("moto's server did not start")


@contextlib.contextmanager
def moto_server():
    """The URL of a fresh moto server (``http://127.0.0.1:<port>``), stopped on exit."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def client(url, key="setup", secret="setup"):
    import boto3

    return boto3.client("s3", endpoint_url=url, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret)


class Gate:
    """Relays every request to moto; ``faults`` is a list of (method, path substring, action) where action is an
    HTTP status (answered instead, with Retry-After: 1 for 429/503) or "drop" (the connection is closed unanswered).
    A fault is used once unless ``sticky``. ``requests`` records (method, path) of what came in."""

    def __init__(self, upstream):
        self.upstream = upstream.split("://", 1)[1]
        self.faults, self.requests, self.lock = [], [], threading.Lock()
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with gate.lock:
                    gate.requests.append((self.command, self.path))
                    fault = next((f for f in gate.faults if f[0] == self.command and f[1] in self.path), None)
                    if fault and not (len(fault) > 3 and fault[3]):
                        gate.faults.remove(fault)
                if fault and fault[2] == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault:
                    payload = b"<Error><Code>InternalError</Code><Message>gate</Message></Error>"
                    self.send_response(fault[2])
                    if fault[2] in (429, 503):
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                connection = http.client.HTTPConnection(gate.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one  # noqa: N815 (http.server API names)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
