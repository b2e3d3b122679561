"""plugin.engine.quicklooks: where a product's quicklook is (OData Assets, STAC thumbnails), fetching it through
the cache, and the cache's size bound. Real local servers: the OData and STAC replicas plus image routes."""

import datetime as dt
import json
import os
import time

import pytest
from replicas import odata
from replicas import stac as stac_replica
from servers import faults, http_server  # noqa: F401 (fixture)

from sentinel2_pipeline.plugin.engine import http, quicklooks
from sentinel2_pipeline.plugin.engine.errors import ServiceError

IMAGE = b"\xff\xd8\xff\xe0" + b"quicklook" * 100  # JPEG magic, then anything: the engine does not decode it


@pytest.fixture
def session():
    with http.new_session(retries=1, backoff=0) as made:
        yield made


def serve_odata_product(server, product):
    """Answer ``Products(<Id>)?$expand=Assets`` as the service does (the entity itself), its quicklook asset
    pointing back at ``server``; returns the asset path."""
    asset = f"/odata/v1/Assets({product['Assets'][0]['Id']})/$value"
    served = dict(product, Assets=[dict(product["Assets"][0], DownloadLink=server.url(asset))])
    served["@odata.context"] = "$metadata#Products/$entity"
    server.route(f"/odata/v1/Products({product['Id']})", json.dumps(served),
                 headers={"Content-Type": "application/json"})
    server.route(asset, IMAGE, headers={"Content-Type": "image/jpeg"})
    return asset


def test_cdse_quicklook_is_found_in_the_product_assets(http_server, session):  # noqa: F811
    product = odata.generate_products(["31TCJ"], dt.date(2023, 6, 1), dt.date(2023, 6, 1))[0]
    asset = serve_odata_product(http_server, product)

    url = quicklooks.quicklook_url("cdse", product["Id"], session, http_server.url("/odata/v1"))

    assert url == http_server.url(asset)
    [lookup] = http_server.requests_to(f"/odata/v1/Products({product['Id']})")
    assert lookup.query == {"$expand": "Assets"}


def test_stac_quicklook_is_the_https_thumbnail_of_the_item(http_server, session):  # noqa: F811
    items = [stac_replica.earth_search_item(p) for p in stac_replica.products(3)]
    stac_replica.StacReplica(items).install(http_server)
    wanted = items[1]

    url = quicklooks.quicklook_url("earth-search", wanted["id"], session, http_server.url("/v1"))

    # The item's thumbnail asset is an s3:// URL (needs AWS credentials); its https thumbnail link is preferred.
    assert url == http_server.url(f"/v1/collections/sentinel-2-l1c/items/{wanted['id']}/thumbnail")


def test_catalogues_without_quicklooks_say_so_without_a_request(http_server, session):  # noqa: F811
    assert not quicklooks.supports("sentinelhub")
    assert quicklooks.quicklook_url("sentinelhub", "x", session, http_server.url("/")) == ""
    assert http_server.requests == []


def test_fetch_goes_through_the_cache(http_server, session, tmp_path):  # noqa: F811
    product = odata.generate_products(["31TCJ"], dt.date(2023, 6, 1), dt.date(2023, 6, 1))[0]
    asset = serve_odata_product(http_server, product)
    cache = quicklooks.Cache(str(tmp_path), 1_000_000)
    root = http_server.url("/odata/v1")

    first = quicklooks.fetch("cdse", product["Id"], session, cache, root)
    again = quicklooks.fetch("cdse", product["Id"], session, cache, root)

    assert first == again and first.endswith(".jpg")
    with open(first, "rb") as stream:
        assert stream.read() == IMAGE
    assert len(http_server.requests_to(asset)) == 1
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".part")]


def test_a_failing_quicklook_service_is_one_sentence(http_server, session, tmp_path):  # noqa: F811
    product = odata.generate_products(["31TCJ"], dt.date(2023, 6, 1), dt.date(2023, 6, 1))[0]
    asset = serve_odata_product(http_server, product)
    http_server.route(asset, status=404, body=b"gone")

    with pytest.raises(ServiceError) as error:
        quicklooks.fetch("cdse", product["Id"], session, quicklooks.Cache(str(tmp_path), 10**6),
                         http_server.url("/odata/v1"))
    assert "404" in str(error.value) and "\n" not in str(error.value)
    assert os.listdir(tmp_path) == []


def test_a_dropped_lookup_is_retried(http_server, tmp_path):  # noqa: F811
    product = odata.generate_products(["31TCJ"], dt.date(2023, 6, 1), dt.date(2023, 6, 1))[0]
    serve_odata_product(http_server, product)
    http_server.routes[-2].fail(faults.drop())  # the product lookup drops once
    with http.new_session(retries=2, backoff=0) as session:
        path = quicklooks.fetch("cdse", product["Id"], session, quicklooks.Cache(str(tmp_path), 10**6),
                                http_server.url("/odata/v1"))
    assert path is not None


def test_the_cache_keeps_the_most_recently_used_files_within_its_size(tmp_path):
    cache = quicklooks.Cache(str(tmp_path), 2500)
    paths = {}
    for index, key in enumerate(("a", "b", "c")):
        paths[key] = cache.put(key, b"x" * 1000)
        os.utime(paths[key], (time.time() - 100 + index, time.time() - 100 + index))  # a oldest, c newest
    # Three 1000-byte files do not fit in 2500: the least recently used one ("a") went when "c" came.
    assert cache.get("a") is None
    assert cache.get("b") == paths["b"]  # using b makes it the newest
    cache.put("d", b"x" * 1000)
    assert cache.get("c") is None and cache.get("b") and cache.get("d")
    assert cache.size() <= 2500


def test_a_zero_size_cache_still_returns_the_file_it_just_stored(tmp_path):
    cache = quicklooks.Cache(str(tmp_path), 0)
    first = cache.put("a", b"x" * 10)
    assert os.path.isfile(first)
    cache.put("b", b"y" * 10)
    assert not os.path.exists(first)
