"""QGIS's proxy settings reach the plugin's HTTP sessions (pytest-qgis provides the QGIS application/profile)."""

import importlib.util

import pytest
from qgis.core import QgsApplication, QgsNetworkAccessManager, QgsSettings
from servers import TestProxy, http_proxy, http_server  # noqa: F401 (fixtures are used by name)

from sentinel2_pipeline.plugin import network

KEYS = ("proxyEnabled", "proxyType", "proxyHost", "proxyPort", "proxyUser", "proxyPassword", "authcfg",
        "noProxyUrls", "proxyExcludedUrls")


@pytest.fixture
def proxy_settings(monkeypatch):
    """Writes ``proxy/*`` QGIS settings for one test and restores the profile afterwards."""
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):  # "direct" must mean direct
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    settings = QgsSettings()
    saved = {key: settings.value(f"proxy/{key}") for key in KEYS if settings.contains(f"proxy/{key}")}

    def apply(**values):
        for key in KEYS:
            settings.remove(f"proxy/{key}")
        for key, value in values.items():
            settings.setValue(f"proxy/{key}", value)
        settings.sync()

    yield apply
    apply(**saved)


def get(url):
    """GET ``url`` with a fresh plugin session, closed afterwards."""
    with network.session() as session:
        return session.get(url)


@pytest.fixture
def logged():
    """Messages written to the QGIS message log during the test."""
    messages = []

    def record(message, *args):
        messages.append(message)

    log = QgsApplication.messageLog()
    log.messageReceived.connect(record)
    yield messages
    log.messageReceived.disconnect(record)


def use_proxy(proxy_settings, proxy, **extra):
    proxy_settings(proxyEnabled=True, proxyType="HttpProxy", proxyHost="127.0.0.1", proxyPort=proxy.port, **extra)


def test_session_goes_through_the_qgis_proxy(proxy_settings, http_server, http_proxy):
    use_proxy(proxy_settings, http_proxy)
    http_server.route("/products", b"listing")
    assert get(http_server.url("/products")).content == b"listing"
    assert [r.url for r in http_proxy.requests] == [http_server.url("/products")]
    assert "sentinel2_pipeline" in http_proxy.requests[0].headers["User-Agent"]


def test_qgis_reads_the_same_settings(proxy_settings, http_proxy):
    """Guards the key names: QGIS's own network manager must see the proxy the plugin sees."""
    use_proxy(proxy_settings, http_proxy, noProxyUrls=["http://internal.example/"])
    manager = QgsNetworkAccessManager.instance()
    try:
        manager.setupDefaultProxyAndCache()
        seen = manager.fallbackProxy()
        assert (seen.hostName(), seen.port()) == ("127.0.0.1", http_proxy.port)
        assert manager.noProxyList() == ["http://internal.example/"]
        assert network.qgis_proxies()["http"] == f"http://127.0.0.1:{http_proxy.port}"
    finally:
        proxy_settings()
        manager.setupDefaultProxyAndCache()


def test_proxy_disabled_connects_directly(proxy_settings, http_server, http_proxy):
    use_proxy(proxy_settings, http_proxy)
    QgsSettings().setValue("proxy/proxyEnabled", False)
    http_server.route("/products", b"listing")
    assert network.qgis_proxies() is None
    assert get(http_server.url("/products")).content == b"listing"
    assert http_proxy.requests == [] and len(http_server.requests_to("/products")) == 1


def test_no_proxy_urls_go_directly(proxy_settings, http_server, http_proxy):
    use_proxy(proxy_settings, http_proxy, noProxyUrls=[f"http://127.0.0.1:{http_server.port}/", "http://x.org"])
    http_server.route("/products", b"listing")
    assert get(http_server.url("/products")).content == b"listing"
    assert http_proxy.requests == []
    assert network.qgis_proxies()["no_proxy"] == "127.0.0.1,x.org"


def test_proxy_user_and_password_are_used_but_never_logged(proxy_settings, http_server, logged):
    http_server.route("/products", b"listing")
    with TestProxy(require_auth=("alice", "pa:ss@word")) as proxy:
        use_proxy(proxy_settings, proxy, proxyUser="alice", proxyPassword="pa:ss@word")
        response = get(http_server.url("/products"))
        proxy_settings(proxyEnabled=True, proxyType="HttpProxy", proxyHost="", proxyPort=proxy.port,
                       proxyPassword="pa:ss@word")
        assert network.qgis_proxies() is None  # enabled without a host: warned about, not used
    assert response.status_code == 200 and response.content == b"listing"
    assert [r.url for r in proxy.requests] == [http_server.url("/products")]  # once: no 407 round trip
    assert any("has no host" in message for message in logged)
    assert not any("pa:ss@word" in message or "pa%3Ass%40word" in message for message in logged)


def test_default_proxy_type_follows_the_environment(proxy_settings, http_proxy):
    use_proxy(proxy_settings, http_proxy)
    QgsSettings().setValue("proxy/proxyType", "DefaultProxy")
    assert network.qgis_proxies() is None


@pytest.mark.skipif(importlib.util.find_spec("socks") is not None, reason="PySocks is installed")
def test_socks_proxy_without_pysocks_is_skipped_with_a_warning(proxy_settings, http_proxy, logged):
    use_proxy(proxy_settings, http_proxy)
    QgsSettings().setValue("proxy/proxyType", "Socks5Proxy")
    assert network.qgis_proxies() is None
    assert any("PySocks" in message for message in logged)
