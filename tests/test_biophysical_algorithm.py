"""sentinel2:biophysical through QGIS Processing (pytest-qgis): layers loaded styled and grouped, AOI layers,
one-sentence errors, s3:// outputs with credentials from the QGIS authentication database (moto on 127.0.0.1),
the same for another algorithm's folder output (sentinel2:sen2cor, staged and uploaded), and headless runs."""

import os

import l2adata
import pytest
from headless import qgis_process  # noqa: F401 (fixture)
from qgis.core import (
    QgsApplication,
    QgsAuthMethodConfig,
    QgsFeature,
    QgsGeometry,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from servers import http_server  # noqa: F401 (fixture)
from test_download_algorithm import MASTER
from test_sen2cor import GIPP_210, STANDIN, l1c_name, standin  # noqa: F401 (fixture)
from test_sen2cor_algorithm import RecordingFeedback, _products

ALGORITHM = "sentinel2:biophysical"


def _run(params, context=None, feedback=None, algorithm=ALGORITHM):
    import processing

    return processing.run(algorithm, params, context=context, feedback=feedback or QgsProcessingFeedback())


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("l2a")
    l2adata.sen2cor_product(str(folder))
    l2adata.maja_product(str(folder))
    return str(folder)


def test_parameters_are_the_public_interface(provider):
    algorithm = QgsApplication.processingRegistry().algorithmById(ALGORITHM)
    assert [p.name() for p in algorithm.parameterDefinitions()] == [
        "INPUT_FOLDER", "VARIABLES", "RESOLUTION", "AOI", "PARALLEL", "PRODUCT_FILTER", "EXECUTOR", "SLURM_OPTIONS",
        "WAIT", "OUTPUT_AUTH", "OUTPUT_FOLDER"]
    assert [o.name() for o in algorithm.outputDefinitions()] == ["OUTPUT_FOLDER", "OUTPUT_LAYERS", "PRODUCTS",
                                                                 "FAILED", "FAILED_COUNT", "JOB_ID"]
    variables = algorithm.parameterDefinition("VARIABLES")
    assert variables.usesStaticStrings() and variables.options() == ["LAI", "FAPAR", "FCOVER", "CCC", "CWC"]
    assert algorithm.parameterDefinition("RESOLUTION").options() == ["20", "10"]
    assert "QUANTIFICATION_VALUE" in algorithm.shortHelpString() and "s3://" in algorithm.shortHelpString()


def test_layers_are_loaded_styled_in_a_group_per_product(provider, scenes, tmp_path):
    project = QgsProject()
    context = QgsProcessingContext()
    context.setProject(project)
    result = _run({"INPUT_FOLDER": scenes, "VARIABLES": ["LAI", "CWC"], "OUTPUT_FOLDER": str(tmp_path)}, context)
    assert result["FAILED"] == "" and result["FAILED_COUNT"] == 0
    assert sorted(result["PRODUCTS"].split(";")) == sorted(p.removesuffix(".SAFE") for p in os.listdir(scenes))
    assert len(result["OUTPUT_LAYERS"]) == 6
    for path, details in context.layersToLoadOnCompletion().items():
        layer = QgsRasterLayer(path, details.name)
        assert layer.isValid()
        project.addMapLayer(layer)
        details.postProcessor().postProcessLayer(layer, context, QgsProcessingFeedback())
        if "_QUALITY_" in path:
            assert layer.renderer().type() == "paletted" and details.name.endswith("QUALITY")
        else:
            assert layer.renderer().type() == "singlebandpseudocolor"
            ramp = layer.renderer().shader().rasterShaderFunction().colorRampItemList()
            colour = ramp[-1].color.name()
            assert colour == ("#004529" if "_LAI_" in path else "#08306b")
            assert details.name.startswith("23LLF 2023-06-01")
    groups = {g.name(): len(g.findLayers()) for g in project.layerTreeRoot().findGroups()}
    assert groups == dict.fromkeys(result["PRODUCTS"].split(";"), 3)


def test_an_aoi_layer_limits_the_window(provider, scenes, tmp_path):
    layer = QgsVectorLayer("Polygon?crs=EPSG:32723", "aoi", "memory")
    feature = QgsFeature()
    x, y = l2adata.ORIGIN
    feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({x + 100} {y - 100}, {x + 400} {y - 100}, {x + 400} "
                                            f"{y - 300}, {x + 100} {y - 300}, {x + 100} {y - 100}))"))
    layer.dataProvider().addFeatures([feature])
    result = _run({"INPUT_FOLDER": scenes, "VARIABLES": ["FCOVER"], "AOI": layer, "PRODUCT_FILTER": "*MSIL2A*",
                   "OUTPUT_FOLDER": str(tmp_path)})
    fcover = QgsRasterLayer(result["OUTPUT_LAYERS"][0], "f")
    assert 15 <= fcover.width() <= 17 and 10 <= fcover.height() <= 12


@pytest.mark.parametrize("change, words", [
    ({"VARIABLES": ["CCC"], "RESOLUTION": "10"}, "VARIABLES: CCC has no 10 m network in the S2 Toolbox"),
    ({"INPUT_FOLDER": "/nonexistent/l2a"}, "INPUT_FOLDER: the folder /nonexistent/l2a does not exist."),
    ({"OUTPUT_FOLDER": "s3://Not_A_Bucket/x"}, "OUTPUT_FOLDER: s3://Not_A_Bucket/x is not an S3 location"),
])
def test_bad_input_is_one_sentence_naming_the_parameter(provider, scenes, tmp_path, change, words):
    params = dict({"INPUT_FOLDER": scenes, "VARIABLES": ["LAI"], "OUTPUT_FOLDER": str(tmp_path / "out")}, **change)
    with pytest.raises(QgsProcessingException) as raised:
        _run(params)
    assert str(raised.value).startswith(words) and "Traceback" not in str(raised.value)
    assert not os.path.exists(tmp_path / "out")


# ---- s3:// through the QGIS authentication database -----------------------------------------------------------

@pytest.fixture(scope="module")
def bucket(qgis_app):
    pytest.importorskip("moto", reason="moto's S3 server plays the bucket (make deps installs it)")
    import s3server

    with s3server.moto_server() as url:
        client = s3server.client(url)
        client.create_bucket(Bucket="results", CreateBucketConfiguration={"LocationConstraint": s3server.REGION})
        manager = QgsApplication.authManager()
        assert manager.masterPasswordIsSet() or manager.setMasterPassword(MASTER, True)
        config = QgsAuthMethodConfig()
        config.setName("bucket")
        config.setMethod("Basic")
        config.setUri(url)  # the endpoint of an S3-compatible store
        config.setConfig("username", "AKIAEXAMPLE")
        config.setConfig("password", "secret-not-for-logs")
        ok, config = manager.storeAuthenticationConfig(config)
        assert ok
        yield client, config.id()


def keys(client, prefix):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket="results", Prefix=prefix).get("Contents", []))


def test_variables_go_to_s3_with_the_auth_configuration(provider, scenes, bucket):
    client, authcfg = bucket
    log = RecordingFeedback()
    context = QgsProcessingContext()
    result = _run({"INPUT_FOLDER": scenes, "VARIABLES": ["LAI"], "PRODUCT_FILTER": "*MSIL2A*",
                   "OUTPUT_AUTH": authcfg, "OUTPUT_FOLDER": "s3://results/lai"}, context, log)
    name = result["PRODUCTS"]
    assert result["OUTPUT_FOLDER"] == "s3://results/lai"  # the location, not the log's description of it
    assert keys(client, "lai/") == [f"lai/{name}_LAI_20m.tif", f"lai/{name}_QUALITY_20m.tif"]
    assert result["OUTPUT_LAYERS"][0] == f"/vsis3/results/lai/{name}_LAI_20m.tif"
    assert sorted(context.layersToLoadOnCompletion()) == sorted(result["OUTPUT_LAYERS"])
    assert not any("secret-not-for-logs" in line for line in log.infos + log.warnings)
    again = RecordingFeedback()
    _run({"INPUT_FOLDER": scenes, "VARIABLES": ["LAI"], "PRODUCT_FILTER": "*MSIL2A*", "OUTPUT_AUTH": authcfg,
          "OUTPUT_FOLDER": "s3://results/lai"}, feedback=again)
    assert any(line.endswith("skipped, its files are already in the output folder") for line in again.infos)


def test_another_algorithms_folder_output_is_staged_and_uploaded(provider, bucket, standin, tmp_path):  # noqa: F811
    client, authcfg = bucket
    _products(tmp_path, "T34UDD")
    result = _run({"INPUT_FOLDER": str(tmp_path / "in"), "EXECUTABLE": STANDIN, "GIPP": GIPP_210,
                   "OUTPUT_AUTH": authcfg, "OUTPUT_FOLDER": "s3://results/l2a"}, algorithm="sentinel2:sen2cor")
    [product] = result["PRODUCTS"].split(";")
    assert product.startswith("s3://results/l2a/S2B_MSIL2A_") and product.endswith(".SAFE")
    stored = keys(client, "l2a/")
    assert any(k.endswith("/MTD_MSIL2A.xml") for k in stored) and any("_SCL_20m" in k for k in stored)
    assert all(layer.startswith("/vsis3/results/l2a/") for layer in result["OUTPUT_LAYERS"])
    assert QgsRasterLayer(result["OUTPUT_LAYERS"][0], "tci").isValid()
    assert result["OUTPUT_FOLDER"] == "s3://results/l2a"
    log = RecordingFeedback()
    stored = keys(client, "l2a/")  # QGIS's reading above may have added the layer's .aux.xml
    again = _run({"INPUT_FOLDER": str(tmp_path / "in"), "EXECUTABLE": STANDIN, "GIPP": GIPP_210,
                  "OUTPUT_AUTH": authcfg, "OUTPUT_FOLDER": "s3://results/l2a"}, feedback=log,
                 algorithm="sentinel2:sen2cor")
    assert again["PRODUCTS"] == product and keys(client, "l2a/") == stored  # not run, nothing sent again
    assert any(line.endswith(f"skipped, {product.rsplit('/', 1)[1]} is already in the output folder")
               for line in log.infos)


def test_a_download_to_s3_skips_the_products_the_bucket_holds(provider, bucket, tmp_path, http_server):  # noqa: F811
    import json

    from replicas import cogs

    from sentinel2_pipeline.plugin.engine import footprints as footprints_module
    from sentinel2_pipeline.plugin.engine.catalogs import stac as stac_catalogue

    client, authcfg = bucket
    bands = tmp_path / "bands"
    l2adata.stac_product(str(bands))
    with open(l2adata.ITEM, encoding="utf-8") as handle:
        item = json.load(handle)
    with cogs.RangeFileServer(str(bands / l2adata.STAC_NAME)) as files:
        item["assets"] = {"red": {"href": files.url("B04.tif")}, "nir": {"href": files.url("B08.tif")}}
        http_server.route("/item", json.dumps(item), headers={"Content-Type": "application/geo+json"})
        footprint = stac_catalogue.item_footprint(item, "earth-search", "L2A")
        footprint.download_url, footprint.name = http_server.url("/item"), l2adata.STAC_NAME
        footprints_module.write_geojson([footprint], str(tmp_path / "footprints.geojson"))
        params = {"INPUT": str(tmp_path / "footprints.geojson"), "SOURCE": "stac", "BANDS": ["B4", "B8"],
                  "OUTPUT_AUTH": authcfg, "OUTPUT_FOLDER": "s3://results/downloads"}
        first = _run(params, algorithm="sentinel2:download")
        served = len(files.requests)
        second = _run(params, algorithm="sentinel2:download")
        assert len(files.requests) == served  # nothing read again
    assert (first["DOWNLOADED"], second["DOWNLOADED"], second["SKIPPED"]) == (1, 0, 1)
    assert first["PRODUCTS"] == second["PRODUCTS"] == f"s3://results/downloads/{l2adata.STAC_NAME}"
    assert keys(client, "downloads/") == [f"downloads/{l2adata.STAC_NAME}/{n}" for n in
                                          ("B04.tif", "B08.tif", "item.json")]


def test_s3_and_slurm_do_not_mix(provider, scenes, bucket):
    _, authcfg = bucket
    with pytest.raises(QgsProcessingException, match="^OUTPUT_FOLDER: EXECUTOR=slurm needs a local or shared"):
        _run({"INPUT_FOLDER": scenes, "VARIABLES": ["LAI"], "EXECUTOR": "slurm", "OUTPUT_AUTH": authcfg,
              "OUTPUT_FOLDER": "s3://results/x"})


# ---- headless -----------------------------------------------------------------------------------------------

@pytest.mark.headless
def test_headless_run_writes_the_layers(qgis_process, scenes, tmp_path):  # noqa: F811 (fixture)
    result = qgis_process.run_alg(ALGORITHM, [("INPUT_FOLDER", scenes), ("VARIABLES", "LAI"), ("VARIABLES", "FAPAR"),
                                              ("PRODUCT_FILTER", "SENTINEL2*"), ("OUTPUT_FOLDER", str(tmp_path))])
    result.check()
    assert result.results["FAILED_COUNT"] == 0 and result.results["PRODUCTS"] == l2adata.MAJA_NAME
    assert sorted(os.listdir(tmp_path)) == sorted(f"{l2adata.MAJA_NAME}_{v}_20m.tif" for v in ("LAI", "FAPAR",
                                                                                                "QUALITY"))
