"""What the zip-fetching sources (cdse, geodes) share: file names of products and turning transfer outcomes into
:class:`Result` objects."""

import os
import re

from . import Result

_SUFFIX = re.compile(r"(\.SAFE)?(\.zip)?$", re.IGNORECASE)


def stem(name):
    """The product name without folder, ``.SAFE`` or ``.zip`` (``S2B_MSIL1C_..._20230601T115221``)."""
    return _SUFFIX.sub("", os.path.basename(str(name or "").rstrip("/")))


def zip_path(folder, footprint):
    """Where a product's zip goes: ``<folder>/<stem>.zip`` (sentinelsat's name, which scripts expect)."""
    return os.path.join(folder, stem(footprint.name) + ".zip")


def offline_result(footprint, service, how_to_restore):
    return Result(footprint, "offline", None,
                  f"{stem(footprint.name)} is offline at {service} (long-term archive) and was not requested; "
                  f"{how_to_restore}")


def results_from_report(pairs, report):
    """One Result per ``(footprint, transfer)`` pair, from a ``transfer.download_all`` report."""
    outcomes = {outcome.transfer.dest: outcome for outcome in report.outcomes}
    results = []
    for footprint, job in pairs:
        outcome = outcomes[job.dest]
        path = outcome.path if outcome.status != "failed" else None
        results.append(Result(footprint, outcome.status, path, outcome.reason))
    return results


def failed(footprint, text):
    """A failed Result whose reason names the product: ``'<stem>: <text>'``."""
    return Result(footprint, "failed", None, f"{stem(footprint.name)}: {text}")
