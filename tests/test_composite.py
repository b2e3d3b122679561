"""The composite engine against a local STAC API and COG server (tests/composite_scenes.py): scenes of two tiles
and two orbits, SCL masks, clouds placed on purpose, old and new processing baselines; expected composites
computed here from the scenes' known reflectances."""

import datetime as dt
import json
import os
import re

import composite_scenes as scenes_data
import numpy as np
import pytest
from osgeo import gdal
from replicas import cogs
from replicas import stac as stac_replica
from servers import TestServer

from sentinel2_pipeline.plugin.engine import composite, storage
from sentinel2_pipeline.plugin.engine.errors import ParameterError

JUNE = (dt.date(2023, 6, 1), dt.date(2023, 7, 15))


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    folder = scenes_data.write_cogs(str(tmp_path_factory.mktemp("cogs")))
    with cogs.RangeFileServer(folder) as files, TestServer() as api:
        replica = stac_replica.StacReplica(scenes_data.items(files.url))
        replica.install(api)
        yield api.url("/v1"), files


def request(**change):
    values = {"area_wkb": scenes_data.area_wkb(), "start": JUNE[0], "end": JUNE[1], "period": "month",
              "bands": scenes_data.BANDS, "method": "median", "resolution": 10, "parallel": 3}
    values.update(change)
    return composite.Request(**values)


def found(services, req):
    url, _ = services
    return composite.search(req, "earth-search", url, None, lambda *a: None, lambda: False, lambda m: None)


def make(services, out, **change):
    req = request(**change)
    logs = []
    results, report, left_out = composite.run(req, found(services, req), storage.output_for(str(out)),
                                              log=logs.append)
    return req, results, report, logs


def truth(req, period):
    """(reflectance (scenes, bands, rows, cols), valid (scenes, rows, cols), indices) on the target grid."""
    grid = composite.target_grid(req.area_wkb, req.resolution)
    col = int((grid.transform[0] - scenes_data.X0) / 10)
    row = int((scenes_data.Y0 - grid.transform[3]) / 10)
    window = (slice(row, row + grid.height), slice(col, col + grid.width))
    indices = [i for i, s in enumerate(scenes_data.SCENES) if period.first <= s[0].date() <= period.last]
    values = np.stack([np.stack([scenes_data.reflectance(i, b)[window] for b in req.bands]) for i in indices])
    classes = np.stack([np.repeat(np.repeat(scenes_data.scl(i), 2, 0), 2, 1)[window] for i in indices])
    left_out = [0, 1, 3, 8, 9, 10] + ([] if req.keep_snow else [11])
    return values, ~np.isin(classes, left_out), indices


def read(path):
    dataset = gdal.Open(path)
    return dataset.GetRasterBand(1).ReadAsArray(), dataset


def test_periods_cover_the_range():
    months = composite.periods(dt.date(2023, 6, 10), dt.date(2023, 8, 5), "month")
    assert [(p.label, p.first, p.last) for p in months] == [
        ("2023-06", dt.date(2023, 6, 10), dt.date(2023, 6, 30)), ("2023-07", dt.date(2023, 7, 1),
                                                                  dt.date(2023, 7, 31)),
        ("2023-08", dt.date(2023, 8, 1), dt.date(2023, 8, 5))]
    dekads = composite.periods(dt.date(2023, 2, 5), dt.date(2023, 2, 28), "10days")
    assert [(p.first.day, p.last.day) for p in dekads] == [(5, 10), (11, 20), (21, 28)]
    assert [p.label for p in composite.periods(dt.date(2023, 1, 1), dt.date(2023, 1, 20), 7)] == [
        "20230101", "20230108", "20230115"]
    with pytest.raises(ParameterError, match="^PERIOD: 'weekly' is not month"):
        composite.periods(dt.date(2023, 1, 1), dt.date(2023, 1, 2), "weekly")


def test_median_per_period_is_the_median_of_the_valid_observations(services, tmp_path):
    req, results, report, logs = make(services, tmp_path)
    assert [r.status for r in results] == ["written", "written"]
    assert [len(r.scenes) for r in results] == [6, 2]
    for result in results:
        values, valid, _ = truth(req, result.period)
        expected = np.where(valid[:, None], values, np.nan)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                median = np.nanmedian(expected, axis=0)
        for j, band in enumerate(req.bands):
            ours, dataset = read(str(tmp_path / f"composite_{result.period.label}_{band}.tif"))
            np.testing.assert_allclose(ours, median[j], atol=1e-4, equal_nan=True, err_msg=band)
            assert dataset.GetMetadata("IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        count, _ = read(str(tmp_path / f"composite_{result.period.label}_count.tif"))
        np.testing.assert_array_equal(count, valid.sum(axis=0))
    assert (tmp_path / "composite_2023-06_truecolour.vrt").exists()


def test_old_and_new_baselines_combine(services, tmp_path):
    """The baseline 03.01 scene alone in a period: its reflectance, not 0.1 too high or too low."""
    req, results, _, _ = make(services, tmp_path, start=dt.date(2023, 6, 13), end=dt.date(2023, 6, 13))
    values, valid, indices = truth(req, results[0].period)
    assert [scenes_data.SCENES[i][3] for i in indices] == ["03.01"]
    red, _ = read(str(tmp_path / "composite_2023-06_B04.tif"))
    np.testing.assert_allclose(red[valid[0]], values[0, 2][valid[0]], atol=1e-4)


def test_medoid_takes_every_band_from_the_observation_nearest_the_median(services, tmp_path):
    req, results, _, _ = make(services, tmp_path, method="medoid", end=dt.date(2023, 6, 30))
    values, valid, _ = truth(req, results[0].period)
    ours = np.stack([read(str(tmp_path / f"composite_2023-06_{b}.tif"))[0] for b in req.bands])
    masked = np.where(valid[:, None], values, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(masked, axis=0)
    distance = np.where(valid, np.nansum((masked - median) ** 2, axis=1), np.inf)
    some = valid.any(axis=0)
    # every band from one valid observation: the one whose bands are nearest to the median (ties within the
    # DN's rounding may go either way)
    same = (np.abs(values - ours[None]) < 2e-4).all(axis=1) & valid
    assert same.any(axis=0)[some].all()
    chosen = np.where(same, distance, np.inf).min(axis=0)
    assert (chosen[some] <= distance.min(axis=0)[some] + 1e-6).all()
    assert np.isnan(ours[:, ~some]).all()


def test_best_pixel_keeps_away_from_clouds_and_says_the_date(services, tmp_path):
    req, results, _, _ = make(services, tmp_path, method="best-pixel", end=dt.date(2023, 6, 30))
    date, _ = read(str(tmp_path / "composite_2023-06_date.tif"))
    red, _ = read(str(tmp_path / "composite_2023-06_B04.tif"))
    values, valid, indices = truth(req, results[0].period)
    stamps = np.array([int(scenes_data.SCENES[i][0].strftime("%Y%m%d")) for i in indices])
    for r in range(0, red.shape[0], 7):
        for c in range(0, red.shape[1], 7):
            if not valid[:, r, c].any():
                assert date[r, c] == 0 and np.isnan(red[r, c])
                continue
            chosen = list(stamps).index(date[r, c])
            assert valid[chosen, r, c] and red[r, c] == pytest.approx(values[chosen, 2, r, c], abs=1e-4)
    assert set(np.unique(date)) - {0} <= set(stamps)


def test_snow_is_a_valid_observation_only_when_asked(services, tmp_path):
    req, results, _, _ = make(services, tmp_path / "snow", keep_snow=True, end=dt.date(2023, 6, 30))
    count_snow, _ = read(str(tmp_path / "snow" / "composite_2023-06_count.tif"))
    _, valid, _ = truth(req, results[0].period)
    np.testing.assert_array_equal(count_snow, valid.sum(axis=0))
    _, plain, _ = truth(request(end=dt.date(2023, 6, 30)), results[0].period)
    assert (valid.sum(axis=0) > plain.sum(axis=0)).any()


def test_a_rerun_skips_the_periods_already_written_and_reads_nothing(services, tmp_path):
    _, files = services
    make(services, tmp_path)
    before = len(files.requests)
    _, results, _, logs = make(services, tmp_path)
    assert [r.status for r in results] == ["skipped", "skipped"] and len(files.requests) == before
    assert "2023-06: skipped, its composite is already in the output folder" in logs
    _, again, _, _ = make(services, tmp_path, method="medoid")  # another method: made again
    assert [r.status for r in again] == ["written", "written"]


def test_the_report_says_scenes_cloud_and_valid_shares(services, tmp_path):
    _, results, report, _ = make(services, tmp_path)
    with open(report[0], encoding="utf-8") as handle:
        document = json.load(handle)
    june = document["periods"][0]
    assert june["period"] == "2023-06" and june["scene_count"] == 6 and june["status"] == "written"
    assert june["scenes"][0] == scenes_data.name(0)
    assert 0.1 < june["cloud_share"] < 0.5 and june["valid_share"] == 1.0
    with open(report[1], encoding="utf-8") as handle:
        page = handle.read()
    assert "<svg" in page and "2023-07" in page and "6 scenes" in page
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_bad_parameters_are_one_sentence_naming_the_parameter(services, tmp_path):
    for change, words in (({"method": "mean"}, "METHOD: 'mean' is not one of"),
                          ({"bands": ("B10",)}, "BANDS: choose among"),
                          ({"resolution": 30}, "RESOLUTION: 30 is not one of"),
                          ({"end": dt.date(2023, 5, 1)}, "END: the end (2023-05-01) is before")):
        with pytest.raises(ParameterError, match="^" + re.escape(words)):
            composite.check(request(**change))
    assert not os.listdir(tmp_path)


def test_the_data_space_s_s3_assets_are_read_with_its_keys(services, tmp_path, monkeypatch):
    """CDSE STAC items point at s3://eodata/...: read through /vsis3/ from a real S3 server (moto), with the keys
    given and the endpoint of SENTINEL2_CDSE_S3_ENDPOINT; the composite equals the one read over HTTPS."""
    pytest.importorskip("moto", reason="moto's S3 server plays the eodata bucket (make deps installs it)")
    import s3server

    from sentinel2_pipeline.plugin.engine.catalogs import stac as stac_catalogue

    folder = scenes_data.write_cogs(str(tmp_path / "cogs"))
    with s3server.moto_server() as url:
        client = s3server.client(url)
        client.create_bucket(Bucket="eodata", CreateBucketConfiguration={"LocationConstraint": s3server.REGION})
        footprints = []
        for index, item in enumerate(scenes_data.items(lambda name: name)):
            assets = {}
            for band, key in (("B02", "B02_10m"), ("B03", "B03_10m"), ("B04", "B04_10m"), ("B08", "B08_10m"),
                              ("SCL", "SCL_20m")):
                name = f"{scenes_data.name(index)}_{band}.tif"
                client.upload_file(os.path.join(folder, name), "eodata", f"Sentinel-2/MSI/L2A/{name}")
                offset = -0.1 if scenes_data.SCENES[index][3] >= "04.00" else 0.0
                assets[key] = {"href": f"s3://eodata/Sentinel-2/MSI/L2A/{name}",
                               **({"raster:scale": 0.0001, "raster:offset": offset} if band != "SCL" else {})}
            item["assets"] = assets
            footprints.append(stac_catalogue.item_footprint(item, "cdse-stac", "L2A"))
        req = request(end=dt.date(2023, 6, 30),
                      s3=storage.Credentials("AKIAEXAMPLE", "not-a-real-secret", None, s3server.REGION))
        scenes = [composite.scene_of(f, req.bands) for f in footprints]
        monkeypatch.setenv(composite.CDSE_S3_VARIABLE, url)
        results, _, left_out = composite.run(req, scenes, storage.output_for(str(tmp_path / "s3")))
        assert left_out == {} and results[0].status == "written"
    make(services, tmp_path / "https", end=dt.date(2023, 6, 30))
    for band in scenes_data.BANDS:
        ours = read(str(tmp_path / "s3" / f"composite_2023-06_{band}.tif"))[0]
        theirs = read(str(tmp_path / "https" / f"composite_2023-06_{band}.tif"))[0]
        np.testing.assert_array_equal(ours, theirs)
