"""Write the shipped graphical models: models/search_download_sen2cor.model3 (search -> download -> sen2cor) and
models/search_download_sen2cor_biophysical.model3 (the same, then sentinel2:biophysical on the Level-2A products).

The model is data (a .model3 file users open in the modeler); this script is how it is made, so a change of
the chain is a reviewed change of code. Run with the project venv (it has qgis and pytest):
    .venv/bin/python scripts/make_model.py
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")


def main():
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import conftest  # noqa: F401  (links the repository as the sentinel2_pipeline package)

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from sentinel2_pipeline import classFactory

    plugin = classFactory(None)
    plugin.initProcessing()
    for model in (build(), build(biophysical=True)):
        errors = [child.childId() for child in model.childAlgorithms().values() if not child.algorithm()]
        if errors:
            raise SystemExit(f"unknown child algorithms: {errors}")
        path = os.path.join(MODELS, f"{model.name()}.model3")
        if not model.toFile(path):
            raise SystemExit(f"could not write {path}")
        print(path)
    plugin.unload()
    app.exitQgis()


def build(biophysical=False):
    from qgis.core import (
        QgsProcessing,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelParameter,
        QgsProcessingParameterAuthConfig,
        QgsProcessingParameterDateTime,
        QgsProcessingParameterEnum,
        QgsProcessingParameterFeatureSource,
        QgsProcessingParameterFile,
        QgsProcessingParameterNumber,
        QgsProcessingParameterString,
    )
    from qgis.core import (
        QgsProcessingModelChildParameterSource as Source,
    )
    from qgis.PyQt.QtCore import QPointF

    # The name is also the id (sentinel2:search_download_sen2cor): no spaces, so scripts can type it. The toolbox
    # shows the title the provider gives it (processing_provider/provider.py: SHIPPED_MODELS).
    model = QgsProcessingModelAlgorithm("search_download_sen2cor" + ("_biophysical" if biophysical else ""),
                                        "Workflows")
    help_content = {
        "ALG_DESC": (
            "From an area and dates to Level-2A products in one run: searches the Copernicus Data Space (or the "
            "catalogue at Catalogue URL) for Level-1C products over the area and dates, downloads them with your "
            "account, checks and extracts them, and runs Sen2Cor on each. A product that fails is listed in the "
            "log; the others go on. Runs again over the same folders skip what is already complete."),
        "ALG_CREATOR": "Sentinel-2 Pipeline",
        "ALG_HELP_CREATOR": "Sentinel-2 Pipeline",
        "ALG_VERSION": "1",
        "area": "The area of interest (a polygon layer; selected features only when there is a selection).",
        "start": "First sensing date (included).",
        "end": "Last sensing date (included).",
        "max_cloud": "Leave out products with more cloud cover than this (%).",
        "auth": "The QGIS authentication configuration that holds your Copernicus Data Space account (Basic).",
        "catalogue_url": "Another OData catalogue root (a mirror, a test server); empty: the Copernicus Data Space.",
        "sen2cor": "The L2A_Process executable; empty: found in PATH, SEN2COR_HOME or the plugin settings.",
        "downloads": "Where the Level-1C products go (.SAFE folders).",
        "l2a": "Where the Level-2A products go.",
        "EXAMPLES": ("qgis_process run sentinel2:search_download_sen2cor -- area=area.geojson start=2023-06-01 "
                     "end=2023-06-30 max_cloud=30 auth=<id> download:downloads=/data/l1c sen2cor:l2a=/data/l2a"),
    }
    if biophysical:
        help_content.update({
            "ALG_DESC": help_content["ALG_DESC"] + (
                " Then estimates the chosen biophysical variables (LAI, FAPAR, FCOVER, CCC, CWC) on the Level-2A "
                "products over the area, with the S2 Toolbox networks, and loads them styled."),
            "variables": "The biophysical variables to estimate (20 m networks).",
            "biophysical": "Where the variable layers and quality bands go (a folder or s3://bucket/prefix).",
            "EXAMPLES": ("qgis_process run sentinel2:search_download_sen2cor_biophysical -- area=area.geojson "
                         "start=2023-06-01 end=2023-06-30 max_cloud=30 auth=<id> variables=LAI variables=FAPAR "
                         "download:downloads=/data/l1c sen2cor:l2a=/data/l2a biophysical:biophysical=/data/bio"),
        })
    model.setHelpContent(help_content)
    inputs = [
        QgsProcessingParameterFeatureSource("area", "Area of interest", [QgsProcessing.TypeVectorAnyGeometry]),
        QgsProcessingParameterDateTime("start", "Start date", QgsProcessingParameterDateTime.Date),
        QgsProcessingParameterDateTime("end", "End date", QgsProcessingParameterDateTime.Date),
        QgsProcessingParameterNumber("max_cloud", "Maximum cloud cover (%)", QgsProcessingParameterNumber.Double,
                                     30.0, minValue=0, maxValue=100),
        QgsProcessingParameterAuthConfig("auth", "Copernicus Data Space account", optional=True),
        QgsProcessingParameterString("catalogue_url", "Catalogue URL (empty: Copernicus Data Space)",
                                     optional=True),
        QgsProcessingParameterFile("sen2cor", "Sen2Cor executable (empty: find it)", optional=True,
                                   fileFilter="All files (*)"),
    ]
    if biophysical:
        variables = QgsProcessingParameterEnum("variables", "Biophysical variables", ["LAI", "FAPAR", "FCOVER",
                                               "CCC", "CWC"], allowMultiple=True, defaultValue=["LAI"])
        variables.setUsesStaticStrings(True)
        inputs.append(variables)
    for index, definition in enumerate(inputs):
        parameter = QgsProcessingModelParameter(definition.name())
        parameter.setPosition(QPointF(120, 60 + 70 * index))
        model.addModelParameter(definition, parameter)

    search = _child("sentinel2:search", "search", "Search Level-1C products", 420, 120, {
        "CATALOG": Source.fromStaticValue("cdse"), "URL": Source.fromModelParameter("catalogue_url"),
        "AOI": Source.fromModelParameter("area"), "START": Source.fromModelParameter("start"),
        "END": Source.fromModelParameter("end"), "LEVEL": Source.fromStaticValue("L1C"),
        "MAX_CLOUD": Source.fromModelParameter("max_cloud"), "MAX_RESULTS": Source.fromStaticValue(0),
        "OUTPUT": Source.fromStaticValue("TEMPORARY_OUTPUT")})
    download = _child("sentinel2:download", "download", "Download the products", 420, 300, {
        "INPUT": Source.fromChildOutput("search", "OUTPUT"), "SOURCE": Source.fromStaticValue("auto"),
        "AUTH": Source.fromModelParameter("auth"), "PARALLEL": Source.fromStaticValue(4),
        "UNZIP": Source.fromStaticValue(True)})
    download.setModelOutputs({"downloads": _output("downloads", "Downloaded products", "download", "OUTPUT_FOLDER")})
    sen2cor = _child("sentinel2:sen2cor", "sen2cor", "Sen2Cor: Level-1C to Level-2A", 420, 480, {
        "INPUT_FOLDER": Source.fromChildOutput("download", "OUTPUT_FOLDER"),
        "EXECUTABLE": Source.fromModelParameter("sen2cor"), "PARALLEL": Source.fromStaticValue(0)})
    sen2cor.setModelOutputs({"l2a": _output("l2a", "Level-2A products", "sen2cor", "OUTPUT_FOLDER")})
    children = [search, download, sen2cor]
    if biophysical:
        estimate = _child("sentinel2:biophysical", "biophysical", "Biophysical variables", 420, 660, {
            "INPUT_FOLDER": Source.fromChildOutput("sen2cor", "OUTPUT_FOLDER"),
            "VARIABLES": Source.fromModelParameter("variables"), "RESOLUTION": Source.fromStaticValue("20"),
            "AOI": Source.fromModelParameter("area"), "PARALLEL": Source.fromStaticValue(0)})
        estimate.setModelOutputs({"biophysical": _output("biophysical", "Biophysical variables", "biophysical",
                                                         "OUTPUT_FOLDER")})
        children.append(estimate)
    for child in children:
        model.addChildAlgorithm(child)
    return model


def _child(algorithm_id, child_id, description, x, y, sources):
    from qgis.core import QgsProcessingModelChildAlgorithm
    from qgis.PyQt.QtCore import QPointF

    child = QgsProcessingModelChildAlgorithm(algorithm_id)
    child.setChildId(child_id)
    child.setDescription(description)
    child.setPosition(QPointF(x, y))
    for name, source in sources.items():
        child.addParameterSources(name, [source])
    return child


def _output(name, description, child_id, output_name):
    from qgis.core import QgsProcessingModelOutput

    output = QgsProcessingModelOutput(name, description)
    output.setChildId(child_id)
    output.setChildOutputName(output_name)
    return output


if __name__ == "__main__":
    main()
