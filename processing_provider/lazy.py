"""Engine modules for algorithms, imported when first used: QGIS builds every algorithm when the plugin loads
(qgis_process too), and the engine modules behind them are only needed when one runs."""

import importlib


class engine_module:  # noqa: N801 (used like a module)
    """``l3a = engine_module("l3a")`` then ``l3a.discover(...)``: the import happens at the first attribute."""

    def __init__(self, name):
        self._name = f"{__package__.rsplit('.', 1)[0]}.plugin.engine.{name}"

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self._name), attribute)
