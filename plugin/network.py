"""QGIS side of networking: QGIS's proxy settings as a ``requests`` proxies dict, and :func:`session`, the single
way the plugin (tasks, algorithms, dialogs) gets an HTTP session.

``requests`` ignores QGIS's proxy settings (Settings > Options > Network), so they are read here from the
profile's ``[proxy]`` section, the keys QgsNetworkAccessManager reads in 3.22: proxyEnabled, proxyType,
proxyHost, proxyPort, proxyUser, proxyPassword, authcfg, noProxyUrls, proxyExcludedUrls. These live in the
profile INI, so the same settings apply under ``qgis_process``.
"""

import importlib.util
import urllib.parse

from qgis.core import Qgis, QgsApplication, QgsAuthMethodConfig, QgsMessageLog, QgsSettings

from .engine.http import new_session

LOG_TAG = "Sentinel-2 Pipeline"
_HTTP_TYPES = ("HttpProxy", "HttpCachingProxy")


def session(**kwargs):
    """A session from :func:`~.engine.http.new_session` with QGIS's proxy settings applied."""
    return new_session(proxies=qgis_proxies(), **kwargs)


def qgis_proxies(settings=None):
    """``{'http': url, 'https': url, 'no_proxy': 'h1,h2'}`` from QGIS's proxy settings, or None when requests
    should follow the environment (proxy disabled, "Default proxy" i.e. the system's, or unusable settings)."""
    settings = settings or QgsSettings()
    if not _as_bool(settings.value("proxy/proxyEnabled", False)):
        return None
    kind = str(settings.value("proxy/proxyType", "") or "")
    host = str(settings.value("proxy/proxyHost", "") or "").strip()
    if kind in ("", "DefaultProxy"):
        return None  # QGIS uses the system proxy: for requests that is HTTP(S)_PROXY / NO_PROXY
    scheme = _scheme_for(kind)
    if scheme is None:
        return None
    if not host:
        _warn("The QGIS proxy is enabled but has no host; connecting without it.")
        return None
    url = f"{scheme}://{_credentials(settings)}{_host_port(host, settings.value('proxy/proxyPort', ''))}"
    proxies = {"http": url, "https": url}
    no_proxy = _no_proxy_hosts(settings)
    if no_proxy:
        proxies["no_proxy"] = ",".join(no_proxy)
    return proxies


def _scheme_for(kind):
    if kind in _HTTP_TYPES:
        return "http"
    if kind == "Socks5Proxy":
        if importlib.util.find_spec("socks") is None:
            _warn("The QGIS proxy is a SOCKS5 proxy, which needs the Python package 'PySocks' (pip install "
                  "PySocks); connecting without the proxy.")
            return None
        return "socks5h"  # the proxy resolves host names, as Qt does for SOCKS5
    _warn(f"The QGIS proxy type '{kind}' does not apply to HTTP downloads; connecting without it.")
    return None


def _credentials(settings):
    """``user:password@`` (URL-quoted) from the proxy settings or their authentication configuration."""
    user = str(settings.value("proxy/proxyUser", "") or "")
    password = str(settings.value("proxy/proxyPassword", "") or "")
    authcfg = str(settings.value("proxy/authcfg", "") or "")
    if authcfg:
        user, password = _auth_credentials(authcfg) or (user, password)
    if not user:
        return ""
    quoted = urllib.parse.quote(user, safe="")
    return f"{quoted}:{urllib.parse.quote(password, safe='')}@" if password else f"{quoted}@"


def _auth_credentials(authcfg):
    config = QgsAuthMethodConfig()
    manager = QgsApplication.authManager()
    if manager is None or not manager.loadAuthenticationConfig(authcfg, config, True):
        _warn(f"Could not read the proxy's authentication configuration '{authcfg}'; using the proxy user.")
        return None
    return config.config("username", ""), config.config("password", "")


def _host_port(host, port):
    port = str(port or "").strip()
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host  # IPv6 literal
    return f"{host}:{port}" if port and port != "0" else host


def _no_proxy_hosts(settings):
    """Host names from QGIS's URL-prefix lists: "no proxy" URLs and the older "excluded" URLs (which QGIS
    sends to the system's default proxy; going direct is the closest requests can do)."""
    hosts = []
    for key in ("proxy/noProxyUrls", "proxy/proxyExcludedUrls"):
        for prefix in _as_list(settings.value(key, [])):
            host = _host_of_prefix(prefix)
            if host and host not in hosts:
                hosts.append(host)
    return hosts


def _host_of_prefix(prefix):
    prefix = prefix.strip()
    if not prefix:
        return ""
    parts = urllib.parse.urlsplit(prefix if "://" in prefix else "//" + prefix)
    return parts.hostname or ""


def _as_list(value):
    # QSettings gives a str for a one-element list; profiles migrated from QGIS 2 hold "a|b" strings.
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [item for item in value.replace("|", ",").split(",") if item.strip()]
    return [str(item) for item in value]


def _as_bool(value):
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def _warn(message):
    QgsMessageLog.logMessage(message, LOG_TAG, Qgis.MessageLevel.Warning)
