"""The ``dhus`` download source: real sentinelsat and the real transfer engine against the DHuS replica
(tests/replicas/dhus.py) on 127.0.0.1: footprints come from the ``dhus`` catalogue searching the same replica."""

import datetime as dt
import hashlib
import os

import pytest
from replicas.dhus import DhusReplica, Product
from servers import TestServer, _basic, http_server  # noqa: F401 (fixtures are used by name)
from test_catalog_dhus import no_ambient_credentials, session  # noqa: F401 (the same fixtures)

from sentinel2_pipeline.plugin.engine.catalogs import Credentials
from sentinel2_pipeline.plugin.engine.catalogs import dhus as dhus_catalog
from sentinel2_pipeline.plugin.engine.errors import ParameterError
from sentinel2_pipeline.plugin.engine.footprints import Footprint
from sentinel2_pipeline.plugin.engine.query import Query
from sentinel2_pipeline.plugin.engine.sources import Options, dhus

ALICE = Credentials("alice", "secret")
START = dt.datetime(2023, 6, 1, tzinfo=dt.timezone.utc)
ONLINE = "S2B_MSIL1C_20230603T105619_N0509_R094_T31TCJ_20230603T113345"
ARCHIVED = "S2A_MSIL1C_20230608T105621_N0509_R094_T31TCJ_20230608T144024"
OTHER = "S2A_MSIL1C_20230611T110621_N0509_R137_T31TCJ_20230611T130009"


def found(replica, session):
    """The footprints the dhus catalogue finds on the replica (what a user's search layer holds)."""
    query = Query(start=START, end=START + dt.timedelta(days=30))
    results = dhus_catalog.search(query, replica.url, ALICE, session, lambda *a: None, lambda: False, lambda line: None)
    return sorted(results, key=lambda f: f.name)


def run(footprints, folder, session, credentials=ALICE, **options):
    lines, fractions = [], []
    results = dhus.download(footprints, str(folder), Options(credentials=credentials, **options), session,
                            lambda fraction, message="": fractions.append(fraction), lambda: False, lines.append)
    return results, lines, fractions


def by_name(results):
    return {result.footprint.name: result for result in results}


def test_online_product_is_downloaded_with_basic_auth_and_verified_md5(http_server, session, tmp_path):
    product = Product(name=ONLINE, cloud=3.0)
    replica = DhusReplica(http_server, [product])

    (result,), lines, fractions = run(found(replica, session), tmp_path, session)

    assert result.status == "downloaded", result.reason
    assert result.path == str(tmp_path / f"{ONLINE}.zip")
    with open(result.path, "rb") as stream:
        data = stream.read()
    assert data == product.content and hashlib.md5(data).hexdigest().upper() == product.md5
    assert sorted(os.listdir(tmp_path)) == [f"{ONLINE}.zip"]  # no .part left behind
    downloads = replica.value_requests(product)
    assert downloads and all(r.headers["Authorization"] == _basic("alice", "secret") for r in downloads)
    assert any(line.startswith(f"Downloaded {ONLINE}") for line in lines)
    assert fractions[-1] == pytest.approx(1.0)


def test_the_password_never_follows_a_redirect_to_another_host(http_server, session, tmp_path):
    product = Product(name=ONLINE, cloud=3.0)
    replica = DhusReplica(http_server, [product])
    with TestServer() as storage:
        storage.route("/blobs/product.zip", body=product.content)
        http_server.route(replica.odata_path(product, "/$value"), status=302,
                          headers={"Location": storage.url("/blobs/product.zip")})

        (result,), _, _ = run(found(replica, session), tmp_path, session)

        assert result.status == "downloaded", result.reason
        assert replica.value_requests(product)[-1].headers["Authorization"] == _basic("alice", "secret")
        blob_requests = storage.requests_to("/blobs/product.zip")
        assert blob_requests and all(r.headers.get("Authorization") is None for r in blob_requests)


def test_offline_product_gets_its_retrieval_triggered_and_does_not_fail_the_batch(http_server, session, tmp_path):
    online, archived = Product(name=ONLINE, cloud=3.0), Product(name=ARCHIVED, cloud=8.0, online=False)
    replica = DhusReplica(http_server, [online, archived])

    results, lines, _ = run(found(replica, session), tmp_path, session)

    results = by_name(results)
    assert results[ONLINE].status == "downloaded"
    offline = results[ARCHIVED]
    assert offline.status == "offline" and offline.path is None
    assert "retrieval was requested" in offline.reason and ARCHIVED in offline.reason
    assert replica.triggers == [archived.uuid]
    (trigger,) = replica.value_requests(archived)  # one retrieval request, as sentinelsat sends it
    assert trigger.headers["Range"] == "bytes=0-1"
    assert not os.path.exists(tmp_path / f"{ARCHIVED}.zip") and not os.path.exists(tmp_path / f"{ARCHIVED}.zip.part")
    assert any("1 of 2 products are offline" in line for line in lines)
    assert offline.reason in lines


def test_retrieval_refused_for_quota_is_reported_offline_with_the_cause(http_server, session, tmp_path):
    archived = Product(name=ARCHIVED, cloud=8.0, online=False, lta="quota")
    replica = DhusReplica(http_server, [archived])

    (result,), _, _ = run(found(replica, session), tmp_path, session)

    assert result.status == "offline"
    assert "did not accept a retrieval request" in result.reason and "quota exceeded" in result.reason
    assert replica.triggers == []


def test_wrong_md5_fails_the_product_without_a_final_file(http_server, session, tmp_path):
    good, bad = Product(name=ONLINE, cloud=3.0), Product(name=OTHER, cloud=1.0, md5="0" * 32)
    replica = DhusReplica(http_server, [good, bad])

    results, _, _ = run(found(replica, session), tmp_path, session)

    results = by_name(results)
    assert results[ONLINE].status == "downloaded"
    failed = results[OTHER]
    assert failed.status == "failed" and failed.path is None
    assert OTHER in failed.reason and "checksum mismatch" in failed.reason
    assert len(replica.value_requests(bad)) == 3  # downloaded again before giving up
    assert sorted(os.listdir(tmp_path)) == [f"{ONLINE}.zip"]


def test_wrong_password_is_one_sentence_on_auth(http_server, session, tmp_path):
    product = Product(name=ONLINE, cloud=3.0)
    replica = DhusReplica(http_server, [product])
    footprints = found(replica, session)

    with pytest.raises(ParameterError) as raised:
        run(footprints, tmp_path, session, credentials=Credentials("alice", "wrong"))

    message = str(raised.value)
    assert message.startswith("AUTH: ") and "refused the user name and password" in message
    assert "wrong" not in message and message.count(". ") == 0
    assert replica.value_requests(product) == [] and os.listdir(tmp_path) == []


def test_missing_credentials_name_where_to_give_them(http_server, session, tmp_path):
    replica = DhusReplica(http_server, [Product(name=ONLINE, cloud=3.0)])

    with pytest.raises(ParameterError, match=r"^AUTH: the dhus source needs a user name and password.*DHUS_USER"):
        run(found(replica, session), tmp_path, session, credentials=None)


def test_complete_products_are_skipped_on_a_second_run(http_server, session, tmp_path):
    product = Product(name=ONLINE, cloud=3.0)
    replica = DhusReplica(http_server, [product])
    footprints = found(replica, session)
    run(footprints, tmp_path, session)
    before = len(replica.value_requests(product))

    (result,), _, _ = run(footprints, tmp_path, session)

    assert result.status == "skipped" and result.path == str(tmp_path / f"{ONLINE}.zip")
    assert len(replica.value_requests(product)) == before  # verified locally against the MD5


def test_removed_product_fails_with_a_sentence(http_server, session, tmp_path):
    product = Product(name=ONLINE, cloud=3.0)
    replica = DhusReplica(http_server, [product])
    footprints = found(replica, session)
    product.removed = True

    (result,), _, _ = run(footprints, tmp_path, session)

    assert result.status == "failed"
    assert result.reason == (f"{ONLINE}: the DHuS mirror 127.0.0.1 has no product with id {product.uuid}; search "
                             f"the mirror again.")


def test_footprints_of_other_catalogues_are_found_by_name_on_the_mirror(http_server, session, tmp_path,
                                                                        monkeypatch):
    product = Product(name=ONLINE, cloud=3.0)
    replica = DhusReplica(http_server, [product])
    monkeypatch.setenv("DHUS_URL", replica.url)
    elsewhere = Footprint(id="7d2e0b53-0000-4000-8000-000000000000", name=ONLINE + ".SAFE", provider="cdse",
                          geometry=None, sensing_start=START,
                          download_url="https://download.example.eu/odata/v1/Products(7d2e0b53)/$value")

    (result,), _, _ = run([elsewhere], tmp_path, session)

    assert result.status == "downloaded", result.reason
    assert replica.value_requests(product)
    assert any(f'identifier:"{ONLINE}"' in r.query.get("q", "") for r in replica.searches())
