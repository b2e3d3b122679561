"""The HTTP session factory against a real local server that misbehaves on purpose (no patching of requests)."""

import email.utils
import os
import socket
import subprocess
import sys
import time

import pytest
import requests
from servers import TestProxy, faults, http_proxy, http_server  # noqa: F401 (fixtures are used by name)

from sentinel2_pipeline.plugin.engine import http
from sentinel2_pipeline.plugin.engine.errors import ServiceError
from sentinel2_pipeline.plugin.engine.version import plugin_version

PAYLOAD = bytes(range(256)) * 40  # 10 KiB


_OPEN_SESSIONS = []


def fast_session(**kwargs):
    """A session with tiny waits so retry tests stay fast; every test states what it changes."""
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("timeout", 5)
    session = http.new_session(**kwargs)
    _OPEN_SESSIONS.append(session)
    return session


@pytest.fixture(autouse=True)
def close_sessions():
    """Close the keep-alive connections each test opened (no leaked sockets between tests)."""
    yield
    while _OPEN_SESSIONS:
        _OPEN_SESSIONS.pop().close()


def gaps(recorded):
    return [later.time - earlier.time for earlier, later in zip(recorded, recorded[1:])]


def assert_one_sentence(message):
    assert message.endswith(".") and "\n" not in message and "Traceback" not in message


def test_user_agent_names_plugin_and_version(http_server):
    http_server.route("/ua", b"ok")
    session = fast_session()
    assert isinstance(session, http.Session) and isinstance(session, requests.Session)
    session.get(http_server.url("/ua"))
    agent = http_server.requests_to("/ua")[0].headers["User-Agent"]
    assert "sentinel2_pipeline" in agent and plugin_version() in agent
    assert plugin_version() != "0"  # read from metadata.txt, not the fallback


def test_default_timeout_applies_and_caller_timeout_wins(http_server):
    http_server.route("/slow", b"late").fail(faults.stall(0.8), faults.stall(0.8))
    session = fast_session(timeout=0.2, retries=0)
    started = time.monotonic()
    with pytest.raises(ServiceError) as raised:
        http.fetch(session, "GET", http_server.url("/slow"), "Test catalogue")
    assert time.monotonic() - started < 0.7
    assert "Test catalogue (127.0.0.1) did not answer in time" in str(raised.value)
    assert session.get(http_server.url("/slow"), timeout=5).content == b"late"


def test_429_with_retry_after_seconds_is_waited_for(http_server):
    http_server.route("/busy", b"done").fail(faults.status(429, retry_after=1))
    started = time.monotonic()
    response = fast_session(backoff=0).get(http_server.url("/busy"))
    assert response.status_code == 200 and response.content == b"done"
    assert time.monotonic() - started >= 0.95
    attempts = http_server.requests_to("/busy")
    assert len(attempts) == 2 and gaps(attempts)[0] >= 0.95


def test_retry_after_http_date_is_parsed_and_capped(http_server):
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    http_server.route("/date", b"ok").fail(faults.status(503, retry_after=in_a_minute))
    response = fast_session(backoff=0, max_backoff=0.6).get(http_server.url("/date"))
    assert response.status_code == 200
    (gap,) = gaps(http_server.requests_to("/date"))
    assert 0.55 <= gap < 2  # the date was understood (not 0) and capped at max_backoff (not 60 s)


def test_retry_after_larger_than_max_backoff_is_capped(http_server):
    http_server.route("/cap", b"ok").fail(faults.status(429, retry_after=120))
    started = time.monotonic()
    assert fast_session(max_backoff=0.3).get(http_server.url("/cap")).status_code == 200
    assert time.monotonic() - started < 2


def test_unparsable_retry_after_falls_back_to_backoff(http_server):
    http_server.route("/odd", b"ok").fail(faults.status(503, retry_after="soon"))
    assert fast_session().get(http_server.url("/odd")).status_code == 200
    assert len(http_server.requests_to("/odd")) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_twice_then_success(http_server, status):
    http_server.route("/flaky", PAYLOAD).fail(faults.status(status), faults.status(status))
    response = fast_session().get(http_server.url("/flaky"))
    assert response.status_code == 200 and response.content == PAYLOAD
    assert len(http_server.requests_to("/flaky")) == 3


@pytest.mark.parametrize("fault", [faults.drop, faults.reset], ids=["closed", "reset"])
def test_dropped_connection_is_retried_for_get(http_server, fault):
    http_server.route("/drop", PAYLOAD).fail(fault())
    response = fast_session().get(http_server.url("/drop"))
    assert response.content == PAYLOAD
    assert len(http_server.requests_to("/drop")) == 2


def test_post_is_retried_only_when_declared_safe(http_server):
    http_server.route("/search", b"{}", method="POST").fail(faults.status(503), faults.status(503))
    assert fast_session().post(http_server.url("/search"), json={}).status_code == 503
    assert len(http_server.requests_to("/search")) == 1
    safe = fast_session(retry_methods=http.IDEMPOTENT_METHODS | {"POST"})
    assert safe.post(http_server.url("/search"), json={}).status_code == 200


def test_status_retries_exhausted_give_one_sentence(http_server):
    http_server.route("/down", b"").fail(*[faults.status(503)] * 5)
    with pytest.raises(ServiceError) as raised:
        http.fetch(fast_session(retries=2), "GET", http_server.url("/down"), "Test catalogue")
    message = str(raised.value)
    assert message.startswith("Test catalogue (127.0.0.1) is unavailable (HTTP 503 Service Unavailable)")
    assert "try again later" in message
    assert_one_sentence(message)
    assert len(http_server.requests_to("/down")) == 3


def test_connection_retries_exhausted_give_one_sentence(http_server):
    http_server.route("/gone", b"").fail(*[faults.drop()] * 5)
    with pytest.raises(ServiceError) as raised:
        http.fetch(fast_session(retries=2), "GET", http_server.url("/gone"))
    message = str(raised.value)
    assert message.startswith("Could not reach 127.0.0.1: the connection failed or was dropped")
    assert_one_sentence(message)
    assert len(http_server.requests_to("/gone")) == 3


def test_refused_connection_names_the_host():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServiceError, match=r"^DEM tiles \(127\.0\.0\.1\) refused the connection"):
        http.fetch(fast_session(retries=1), "GET", f"http://127.0.0.1:{port}/x", "DEM tiles")


def test_truncated_body_raises_instead_of_returning_short_data(http_server):
    http_server.route("/cut", PAYLOAD).fail(faults.drop_mid(3000), faults.drop_mid(3000))
    with pytest.raises(ServiceError, match="broke before the whole answer arrived"):
        http.fetch(fast_session(), "GET", http_server.url("/cut"))
    streamed = fast_session().get(http_server.url("/cut"), stream=True)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        b"".join(streamed.iter_content(1024))


def test_slow_body_beyond_read_timeout_raises(http_server):
    http_server.route("/trickle", PAYLOAD).fail(faults.slow(0.5, chunk_size=4096))
    with pytest.raises(ServiceError):
        http.fetch(fast_session(timeout=(2, 0.2), retries=0), "GET", http_server.url("/trickle"))


def test_slow_body_within_timeout_completes(http_server):
    http_server.route("/trickle", PAYLOAD).fail(faults.slow(0.02, chunk_size=2048))
    assert fast_session().get(http_server.url("/trickle")).content == PAYLOAD


def test_head_is_answered_without_body(http_server):
    http_server.route("/meta", PAYLOAD)
    response = fast_session().head(http_server.url("/meta"))
    assert response.status_code == 200 and int(response.headers["Content-Length"]) == len(PAYLOAD)


def test_range_requests_are_honoured_or_ignored_on_purpose(http_server):
    http_server.route("/band.tif", PAYLOAD).fail(faults.ignore_range())
    session = fast_session()
    ignored = session.get(http_server.url("/band.tif"), headers={"Range": "bytes=100-"})
    honoured = session.get(http_server.url("/band.tif"), headers={"Range": "bytes=100-199"})
    assert ignored.status_code == 200 and ignored.content == PAYLOAD
    assert honoured.status_code == 206 and honoured.content == PAYLOAD[100:200]
    assert honoured.headers["Content-Range"] == f"bytes 100-199/{len(PAYLOAD)}"
    assert [r.headers.get("Range") for r in http_server.requests_to("/band.tif")] == ["bytes=100-", "bytes=100-199"]


def test_error_messages_never_show_secrets(http_server):
    http_server.route("/odata", b"").fail(faults.status(401))
    url = http_server.url("/odata?$top=1&token=TOK123SECRET&access_token=AT456SECRET&password=PW789SECRET")
    with pytest.raises(ServiceError) as raised:
        http.fetch(fast_session(), "GET", url, "Copernicus Data Space",
                   headers={"Authorization": "Bearer BEARERSECRETVALUE"})
    message = str(raised.value)
    assert "check the authentication configuration" in message and "HTTP 401" in message
    assert "SECRET" not in message and "token=***" in message and "$top=1" in message
    assert http_server.requests_to("/odata")[0].headers["Authorization"] == "Bearer BEARERSECRETVALUE"


def test_network_error_messages_never_show_secrets():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServiceError) as raised:
        http.fetch(fast_session(retries=0), "GET", f"http://u:PWSECRET@127.0.0.1:{port}/p?token=TOKSECRET")
    assert "SECRET" not in str(raised.value) and "SECRET" not in raised.value.detail
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_redact_covers_urls_and_headers():
    text = "https://alice:hunter2@host/x?a=1&api_key=K3Y&X-Amz-Signature=abc Authorization: Bearer eyJhbGciOi.x.y"
    redacted = http.redact(text)
    assert "hunter2" not in redacted and "K3Y" not in redacted and "abc " not in redacted
    assert "eyJhbGciOi" not in redacted and "a=1" in redacted and "alice" in redacted


@pytest.mark.parametrize("status, expected", [
    (404, "has nothing at"),
    (403, "check the authentication configuration"),
    (429, "is rate limiting requests"),
])
def test_status_messages_give_a_hint(http_server, status, expected):
    http_server.route("/s", b"").fail(*[faults.status(status)] * 3)
    with pytest.raises(ServiceError, match=expected) as raised:
        http.fetch(fast_session(retries=1, max_backoff=0.05), "GET", http_server.url("/s"), "STAC API")
    assert f"HTTP {status}" in str(raised.value)
    assert_one_sentence(str(raised.value))


def test_bad_request_quotes_the_service_reason(http_server):
    body = b'{"detail": "Invalid filter: unknown property cloudCover.\\n token=abc"}'
    http_server.route("/Products", b"").fail(
        faults.status(400, body=body, headers={"Content-Type": "application/json"}))
    with pytest.raises(ServiceError) as raised:
        http.fetch(fast_session(), "GET", http_server.url("/Products"), "Copernicus Data Space")
    message = str(raised.value)
    assert "HTTP 400" in message and "unknown property cloudCover" in message and "abc" not in message
    assert_one_sentence(message)


def test_proxies_are_applied(http_server, http_proxy):
    http_server.route("/via", b"proxied")
    session = fast_session(proxies={"http": http_proxy.url, "https": http_proxy.url})
    assert session.get(http_server.url("/via")).content == b"proxied"
    assert [r.url for r in http_proxy.requests] == [http_server.url("/via")]
    assert http_server.requests_to("/via")[0].headers["User-Agent"].startswith("QGIS-sentinel2_pipeline/")


def test_no_proxy_hosts_go_direct(http_server, http_proxy):
    http_server.route("/direct", b"direct")
    session = fast_session(proxies={"http": http_proxy.url, "no_proxy": "example.org, 127.0.0.1"})
    assert session.get(http_server.url("/direct")).content == b"direct"
    assert http_proxy.requests == [] and len(http_server.requests_to("/direct")) == 1


def test_explicit_proxies_win_over_environment(http_server, http_proxy, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # discard port: would fail if used
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # QGIS's settings, not the environment, decide
    http_server.route("/env", b"ok")
    assert fast_session(proxies={"http": http_proxy.url}).get(http_server.url("/env")).content == b"ok"
    assert len(http_proxy.requests) == 1


def test_proxy_credentials_are_sent(http_server):
    http_server.route("/x", b"ok")
    with TestProxy(require_auth=("alice", "p@ss:w/rd")) as proxy:
        url = proxy.url.replace("http://", "http://alice:p%40ss%3Aw%2Frd@")  # quoted as plugin.network does
        response = fast_session(proxies={"http": url}).get(http_server.url("/x"))
        refused = fast_session(proxies={"http": proxy.url}).get(http_server.url("/x"))
    assert response.status_code == 200 and response.content == b"ok"
    assert refused.status_code == 407
    assert len(http_server.requests_to("/x")) == 1


@pytest.mark.parametrize("entry, host, port, bypassed", [
    ("*", "a.b", None, True),
    ("example.org", "example.org", None, True),
    (".example.org", "data.example.org", None, True),
    ("example.org", "badexample.org", None, False),
    ("127.0.0.1:8080", "127.0.0.1", 8080, True),
    ("127.0.0.1:8080", "127.0.0.1", 9090, False),
])
def test_no_proxy_matching(entry, host, port, bypassed):
    assert http._bypassed(host, port, http._no_proxy_entries(entry)) is bypassed


def test_module_import_does_not_load_requests():
    plugin_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "pluginpath")
    code = ("import sys; sys.path.insert(0, %r); import sentinel2_pipeline.plugin.engine.http; "
            "print('requests' in sys.modules)" % plugin_path)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
