"""Quicklooks for the search panel, fetched in background tasks and kept in the on-disk cache.

The lookup and the download go through the plugin's HTTP session (QGIS proxy settings, retries) inside a
QgsTask, so the panel never waits on the network. The cache size and folder come from the plugin settings.
"""

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QObject, pyqtSignal

from ..plugin import network, settings
from ..plugin.engine import quicklooks
from ..plugin.engine.errors import S2Error


def cache():
    return quicklooks.Cache(settings.quicklook_cache_folder(), settings.quicklook_cache_mb() * 1_000_000)


def key_of(catalog, product_id):
    return f"{catalog}:{product_id}"


class QuicklookTask(QgsTask):
    def __init__(self, catalog, product_id, url, on_done):
        super().__init__(f"Sentinel-2 quicklook of {product_id}", QgsTask.Flag.CanCancel)
        self.catalog, self.product_id, self.url = catalog, product_id, url
        self.on_done = on_done
        self.cache = cache()
        self.session = network.session(retries=2)  # made here: it reads QgsSettings, a main-thread object
        self.path, self.error = None, None

    def run(self):
        # Never raise here (the task manager would swallow it): keep the sentence for finished().
        try:
            self.path = quicklooks.fetch(self.catalog, self.product_id, self.session, self.cache, self.url,
                                         is_cancelled=self.isCanceled)
        except S2Error as error:
            self.error = str(error)
        except Exception as error:  # noqa: BLE001 (a quicklook must never take the panel down)
            self.error = f"The quicklook could not be loaded ({type(error).__name__})."
        return self.error is None and not self.isCanceled()

    def finished(self, ok):
        self.session.close()
        self.on_done(self, ok)


class QuicklookLoader(QObject):
    """``request()`` a product's quicklook; ``loaded(key, path)`` or ``failed(key, message)`` follows."""

    loaded = pyqtSignal(str, str)
    failed = pyqtSignal(str, str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.tasks = {}  # key -> task; Python keeps the task alive until it reported back

    def request(self, catalog, product_id, url=None):
        key = key_of(catalog, product_id)
        if not quicklooks.supports(catalog):
            self.failed.emit(key, f"The catalogue {catalog} offers no quicklooks.")
            return key
        cached = cache().get(key)
        if cached:
            self.loaded.emit(key, cached)
        elif key not in self.tasks:
            task = QuicklookTask(catalog, product_id, url, self._done)
            self.tasks[key] = task
            QgsApplication.taskManager().addTask(task)
        return key

    def cancel_all(self):
        for task in list(self.tasks.values()):
            if not sip.isdeleted(task):
                task.cancel()

    def running(self):
        return list(self.tasks.values())

    def _done(self, task, ok):
        key = key_of(task.catalog, task.product_id)
        self.tasks.pop(key, None)
        if sip.isdeleted(self):
            return
        if ok and task.path:
            self.loaded.emit(key, task.path)
        elif not task.isCanceled():
            self.failed.emit(key, task.error or "This product has no quicklook.")
