"""The engine of ``sentinel2:download``: products listed as footprints -> verified products in a folder.

:func:`download` does, in this order:

1. validation, before any network or disk work: footprints to download (INPUT), a known SOURCE, each used
   source's own parameters (AUTH, BANDS, AOI), then the output folder (created, writable: OUTPUT_FOLDER);
2. routing: ``SOURCE=auto`` sends each footprint to the source of the catalogue it came from (:data:`AUTO`);
   a footprint whose catalogue has no source fails on its own with a sentence;
3. skipping what is already complete: an extracted .SAFE that passes ``safe.check`` (after ``safe.repair``), or
   another product folder of that name (GEODES/THEIA zips); zips and band files are skipped by the sources;
4. a pre-check: the sizes the catalogues state against the free space (plus room to extract the largest when
   UNZIP), and a count of offline (long-term archive) products, which are reported and are not failures;
5. the sources, one after the other, each with bounded parallelism (``options.parallel``);
6. after a zip arrives (UNZIP): safe extraction (entries escaping the folder, links, bombs are refused), repair
   of the empty folders Sen2Cor needs (said in the log), a structure check. The zip is deleted once the product
   is extracted and checked; it is kept when UNZIP is false, when extraction is refused or when the extracted
   product fails the check (the extracted folder is removed then, so only whole products carry the name).

A re-run therefore downloads only what is missing, and resumes partial ``.part`` files.
"""

import dataclasses
import importlib
import os
import shutil

from . import http, safe, transfer
from .callbacks import check_cancelled, never_cancelled, no_progress, scaled
from .errors import ParameterError, S2Error
from .sources import SOURCES, Result
from .sources.common import stem

# catalogue (footprint ``provider``) -> source module for SOURCE=auto. CDSE STAC footprints carry the OData zip
# link of the same product, so they go to cdse; Sentinel Hub footprints are looked up in OData by name there.
AUTO = {"cdse": "cdse", "cdse-stac": "cdse", "sentinelhub": "cdse", "earth-search": "stac", "geodes": "geodes",
        "dhus": "dhus"}
ZIP_SOURCES = ("cdse", "dhus", "geodes", "aws")  # sources whose products are SAFE zips or folders
SAFE_SUFFIX = ".SAFE"


@dataclasses.dataclass
class Summary:
    """What happened to every product, in the order of the footprints."""

    results: list

    def _with(self, status):
        return [result for result in self.results if result.status == status]

    @property
    def downloaded(self):
        return self._with("downloaded")

    @property
    def skipped(self):
        return self._with("skipped")

    @property
    def failed(self):
        return self._with("failed")

    @property
    def offline(self):
        return self._with("offline")

    @property
    def products(self):
        """Paths of the products now complete in the folder (downloaded or skipped)."""
        return [r.path for r in self.results if r.status in ("downloaded", "skipped") and r.path]

    def lines(self):
        return [line(result) for result in self.results]


def line(result):
    """The per-product log line."""
    name = stem(result.footprint.name)
    if result.status == "failed":
        return f"Failed: {result.reason}"
    if result.status == "offline":
        return f"Offline: {result.reason}"
    if result.status == "skipped":
        return f"Skipped {name}: already complete in {result.path}."
    return f"Downloaded {name}: {result.path}{' (' + result.reason + ')' if result.reason else ''}."


def download(footprints, source, folder, options, session=None, progress=None, is_cancelled=None, log=None,
             unzip=True):
    """Download ``footprints`` (see the module docstring) and return a :class:`Summary`.

    ``source``: one of ``sources.SOURCES``; ``options``: ``sources.Options``; ``unzip``: extract zips (and delete
    them once the product checks out). Raises ParameterError for unusable parameters, Cancelled on cancel.
    """
    progress, is_cancelled = progress or no_progress, is_cancelled or never_cancelled
    log = log or (lambda message: None)
    footprints = _unique(_validate(footprints, source, options), log)
    routes, results = _route(footprints, source)
    modules = _modules(routes, results)
    for module in modules.values():
        if hasattr(module, "validate"):
            module.validate(options)
    folder = _output_folder(folder)
    routes, done = _complete(routes, folder)
    results += done
    _precheck(routes, folder, unzip, log)
    own_session = session is None
    session = session or http.new_session()
    try:
        results += _run_sources(routes, modules, folder, options, session, scaled(progress, 0.0, 0.9),
                                is_cancelled, log)
    finally:
        if own_session:
            session.close()
    results = _finish_all(results, folder, unzip, scaled(progress, 0.9, 1.0), is_cancelled, log)
    summary = Summary(_in_order(results, footprints))
    for text in summary.lines():
        log(text)
    progress(1.0, f"{len(summary.downloaded)} downloaded, {len(summary.skipped)} skipped, "
                  f"{len(summary.failed)} failed, {len(summary.offline)} offline")
    return summary


# ---- 1. validation --------------------------------------------------------------------------------------------


def _validate(footprints, source, options):
    footprints = list(footprints or ())
    if not footprints:
        raise ParameterError("INPUT", "there are no footprints to download (the layer is empty, or its selection "
                                      "is).")
    if source not in SOURCES:
        raise ParameterError("SOURCE", f"'{source}' is not one of {', '.join(SOURCES)}.")
    if int(options.parallel) < 1:
        raise ParameterError("PARALLEL", "at least one parallel download is needed.")
    nameless = [f for f in footprints if not stem(f.name)]
    if nameless:
        raise ParameterError("INPUT", f"{len(nameless)} footprint(s) have no product name; use footprints from "
                                      f"sentinel2:search.")
    return footprints


def _unique(footprints, log):
    """One footprint per product name (the first), said in the log when there were more."""
    seen, unique = set(), []
    for footprint in footprints:
        key = stem(footprint.name)
        if key in seen:
            log(f"{key} is listed more than once; it is downloaded once.")
            continue
        seen.add(key)
        unique.append(footprint)
    return unique


def _output_folder(folder):
    if not folder:
        raise ParameterError("OUTPUT_FOLDER", "no output folder was given.")
    folder = os.path.abspath(os.fspath(folder))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise ParameterError("OUTPUT_FOLDER", f"cannot create the folder {folder} ({error.strerror}).") from None
    if not os.access(folder, os.W_OK | os.X_OK) or not _can_write(folder):
        raise ParameterError("OUTPUT_FOLDER", f"the folder {folder} is not writable; choose another folder.")
    return folder


def _can_write(folder):
    """A real write: access() says yes to root on read-only mounts and ignores ACLs."""
    probe = os.path.join(folder, f".s2-write-test-{os.getpid()}")
    try:
        with open(probe, "wb"):
            pass
        os.remove(probe)
        return True
    except OSError:
        return False


# ---- 2. routing -----------------------------------------------------------------------------------------------


def _route(footprints, source):
    """({source module name: [footprints]}, [failed Results for footprints no source takes])."""
    routes, failures = {}, []
    for footprint in footprints:
        name = AUTO.get(footprint.provider) if source == "auto" else source
        if name is None:
            catalogue = footprint.provider or "none"
            failures.append(Result(footprint, "failed", None, (
                f"{stem(footprint.name)}: its catalogue ('{catalogue}') has no download source for SOURCE=auto; "
                f"choose SOURCE (cdse, aws, dhus or stac).")))
            continue
        routes.setdefault(name, []).append(footprint)
    return routes, failures


def _modules(routes, failures):
    """{name: module}; a source missing from this installation fails its footprints (and leaves the route)."""
    modules = {}
    for name in list(routes):
        try:
            modules[name] = importlib.import_module(f"{__package__}.sources.{name}")
        except ModuleNotFoundError as error:
            if not error.name or not error.name.endswith(f"sources.{name}"):
                raise
            failures += [Result(f, "failed", None, f"{stem(f.name)}: the {name} source is not available in this "
                                                    f"version of the plugin.") for f in routes.pop(name)]
    return modules


# ---- 3. already complete --------------------------------------------------------------------------------------


def _complete(routes, folder):
    """(routes without the products already complete in ``folder``, skipped Results)."""
    remaining, skipped = {}, []
    for name, footprints in routes.items():
        for footprint in footprints:
            path = _complete_product(footprint, folder) if name in ZIP_SOURCES else None
            if path:
                skipped.append(Result(footprint, "skipped", path))
            else:
                remaining.setdefault(name, []).append(footprint)
    return remaining, skipped


def _complete_product(footprint, folder):
    """The path of the product when it is already extracted and usable, else None."""
    key = stem(footprint.name)
    safe_path = os.path.join(folder, key + SAFE_SUFFIX)
    if os.path.isdir(safe_path):
        safe.repair(safe_path)
        return safe_path if not safe.check(safe_path) else None
    other = os.path.join(folder, key)  # non-SAFE products (THEIA): extraction is atomic, so a folder is whole
    return other if not key.startswith("S2") and os.path.isdir(other) else None


# ---- 4. pre-check ---------------------------------------------------------------------------------------------


def _precheck(routes, folder, unzip, log):
    """Free space for what the catalogues say is left to fetch; the offline count."""
    pending = [f for name, footprints in routes.items() if name in ZIP_SOURCES for f in footprints]
    offline = [f for footprints in routes.values() for f in footprints if f.online is False]
    if offline:
        log(f"{len(offline)} of {sum(len(f) for f in routes.values())} products are offline (long-term archive): "
            f"they are reported, not counted as failures.")
    missing = [_missing_bytes(f, folder) for f in pending if f.online is not False]
    needed = sum(missing) + (max(missing, default=0) if unzip else 0)  # room to extract the largest zip
    if needed:
        transfer.check_free_space(folder, needed)


def _missing_bytes(footprint, folder):
    size = int(footprint.size_bytes or 0)
    zip_file = os.path.join(folder, stem(footprint.name) + ".zip")
    present = max(_size(zip_file), _size(zip_file + ".part"))
    return max(size - present, 0)


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# ---- 5. the sources -------------------------------------------------------------------------------------------


def _run_sources(routes, modules, folder, options, session, progress, is_cancelled, log):
    results, total = [], sum(len(f) for f in routes.values())
    done = 0
    for name, footprints in routes.items():
        check_cancelled(is_cancelled)
        step = scaled(progress, done / total, (done + len(footprints)) / total)
        log(f"{name}: {len(footprints)} product(s).")
        results += modules[name].download(footprints, folder, options, session, step, is_cancelled, log)
        done += len(footprints)
    return results


# ---- 6. extraction, repair, check -----------------------------------------------------------------------------


def _finish_all(results, folder, unzip, progress, is_cancelled, log):
    finished = []
    for index, result in enumerate(results):
        check_cancelled(is_cancelled)
        finished.append(_finish(result, folder, unzip, is_cancelled, log))
        progress((index + 1) / len(results), "Checking products")
    return finished


def _finish(result, folder, unzip, is_cancelled, log):
    """The Result once the product is extracted (when asked), repaired and checked."""
    if result.status not in ("downloaded", "skipped") or not result.path:
        return result
    path = result.path
    if path.lower().endswith(".zip"):
        if not unzip:
            return result
        try:
            path = safe.extract_zip(path, folder, is_cancelled=is_cancelled, replace=True)
        except S2Error as error:
            return result._replace(status="failed", path=None, reason=f"{stem(path)}: {error}")
        return _checked(result, path, zip_path=result.path, log=log)
    if path.endswith(SAFE_SUFFIX):
        return _checked(result, path, zip_path=None, log=log)
    return result


def _checked(result, path, zip_path, log):
    """Repair and check an extracted product; delete its zip when it checks out, its folder when not."""
    name = stem(path)
    repaired = safe.repair(path) if path.endswith(SAFE_SUFFIX) else []
    problems = safe.check(path) if path.endswith(SAFE_SUFFIX) else []
    if problems:
        if zip_path:
            shutil.rmtree(path, ignore_errors=True)
        kept = " (the zip is kept)" if zip_path else ""
        return result._replace(status="failed", path=None, reason=f"{name} was downloaded but is not a usable "
                                                                  f"product{kept}: {problems[0]}")
    if repaired:
        log(f"{name}: created the empty folders Sen2Cor needs: {', '.join(repaired)}.")
    if zip_path:
        os.remove(zip_path)
    notes = ["extracted"] if zip_path else []
    notes += [f"repaired: {', '.join(repaired)}"] if repaired else []
    return result._replace(path=path, reason="; ".join(notes) if result.status == "downloaded" else "")


def _in_order(results, footprints):
    order = {stem(f.name): index for index, f in enumerate(footprints)}
    return sorted(results, key=lambda r: order.get(stem(r.footprint.name), len(order)))
