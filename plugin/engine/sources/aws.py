"""The ``aws`` download source: Level-1C products rebuilt as .SAFE folders from the requester-pays bucket
``sentinel-s2-l1c`` by sentinelhub-py's ``AwsProductRequest(..., safe_format=True)``.

How sentinelhub fetches (``sentinelhub.aws``, 3.x): ``productInfo.json``, ``tileInfo.json`` and both
``metadata.xml`` (MTD_MSIL1C.xml, MTD_TL.xml) over plain HTTP from ``aws_metadata_url`` (roda.sentinel-hub.com,
a public mirror of the bucket's metadata), everything else (bands, TCI, QI masks and reports, ECMWF/CAMS
auxiliary files, manifest, INSPIRE, datastrip metadata) with boto3 ``get_object(..., RequestPayer='requester')``
from ``s3://sentinel-s2-l1c/products|tiles/...``. The AWS account of the keys pays the transfer.

AWS keys: from ``AUTH`` (user name = access key ID, password = secret access key), else sentinelhub's
configuration (``sentinelhub.config --aws_access_key_id``), else boto3's standard chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` and ``~/.aws/credentials``, SSO, instance roles).

Mirrors and tests: ``SENTINEL2_AWS_S3_ENDPOINT`` (an S3-compatible endpoint, path-style for IP addresses) and
``SENTINEL2_AWS_METADATA_URL`` (the metadata host). sentinelhub has no parameter for either reachable from
``AwsProductRequest``: its boto3 client takes the endpoint only from boto3's own settings, so the first becomes
``AWS_ENDPOINT_URL_S3`` (boto3 >= 1.28 reads it; setting that variable directly works too); and the tile objects
it builds read a fresh ``SHConfig()`` instead of ours, so the second is written to a private sentinelhub
configuration that ``XDG_CONFIG_HOME``/``SH_PROFILE`` point at. Both variables are set only while a download
runs, under a lock, and restored after (a sentinelhub catalogue search running at that very moment in another
QGIS task would read that private configuration: use the overrides for tests and mirrors, not day to day).

Files go to the hidden ``.<name>.SAFE.aws`` folder next to the product; the .SAFE is repaired (empty folders
Sen2Cor needs), checked as a Level-1C product and only then renamed into place. An interrupted run resumes
file by file: files already fetched are kept when their size matches the bucket object (sentinelhub writes
each file in one piece, but would trust one cut short by a killed process). A cancel stops between files: the
files in flight are completed first (sentinelhub reads each object whole), so it can take as long as one band.
"""

import concurrent.futures
import contextlib
import os
import re
import tempfile
import threading
import types
import warnings

from .. import files, http, safe
from ..callbacks import check_cancelled, scaled
from ..errors import Cancelled, MissingDependency, ParameterError, S2Error
from ..footprints import parse_product_name
from . import Result

ENDPOINT_ENV = "SENTINEL2_AWS_S3_ENDPOINT"
METADATA_ENV = "SENTINEL2_AWS_METADATA_URL"
NO_KEYS = ("the aws source needs AWS access keys, because the bucket is requester-pays (your AWS account pays "
           "the transfer): choose an authentication configuration with the access key ID as user name and the "
           "secret access key as password, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or configure an "
           "AWS profile (~/.aws/credentials, AWS_PROFILE).")
_ENV_LOCK = threading.Lock()  # one download at a time may change the process environment
_POLL = 0.2  # seconds between progress and cancel checks while files download


def download(footprints, folder, options, session, progress, is_cancelled, log):
    lib = _import()
    footprints = list(footprints)
    if not footprints:
        return []
    results = []
    with _quiet(lib):
        config = _config(lib)
        origin = _keys(lib, config, options.credentials)
        log(f"AWS: reading the requester-pays bucket {config.aws_s3_l1c_bucket} with the access key from {origin}; "
            f"the AWS account pays the transfer.")
        with _overrides(lib, config, log):
            for number, footprint in enumerate(footprints):
                check_cancelled(is_cancelled)
                part = scaled(progress, number / len(footprints), (number + 1) / len(footprints))
                result = _product(lib, footprint, folder, config, options, part, is_cancelled, log)
                log(_line(result))
                results.append(result)
    return results


def _import():
    """sentinelhub's AWS part and what it raises; MissingDependency names the extra that brings boto3."""
    try:
        import boto3
        import botocore.exceptions
        import requests
        import sentinelhub.config
        import sentinelhub.exceptions as sh_errors  # installs sentinelhub's own warning filters

        with warnings.catch_warnings():  # sentinelhub.aws subclasses its deprecated classes, which warns
            warnings.simplefilter("ignore", sh_errors.SHDeprecationWarning)
            from sentinelhub.aws import AwsProductRequest
            from sentinelhub.aws.constants import AwsConstants
    except ImportError:
        raise MissingDependency("sentinelhub", "sentinelhub[aws]", "(sentinelhub with boto3) for the aws "
                                                                     "download source") from None
    return types.SimpleNamespace(
        boto3=boto3, botocore=botocore, requests=requests, SHConfig=sentinelhub.config.SHConfig,
        DEFAULT_PROFILE=sentinelhub.config.DEFAULT_PROFILE, AwsProductRequest=AwsProductRequest,
        AwsConstants=AwsConstants, DownloadFailedException=sh_errors.DownloadFailedException,
        AwsDownloadFailedException=sh_errors.AwsDownloadFailedException,
        warnings=(sh_errors.SHDeprecationWarning, sh_errors.SHUserWarning, sh_errors.SHRuntimeWarning))


@contextlib.contextmanager
def _quiet(lib):
    """sentinelhub warns that its AWS part is unmaintained and that recent baselines are 'not officially
    supported'; the result is checked here instead, so those warnings would only alarm the user."""
    with warnings.catch_warnings():
        for category in lib.warnings:
            warnings.simplefilter("ignore", category)
        yield


def _config(lib):
    """sentinelhub's own configuration: the tile objects it builds read it too, so both agree on hosts."""
    try:
        return lib.SHConfig()
    except (KeyError, OSError, ValueError) as error:  # missing SH_PROFILE, unreadable or invalid TOML
        raise S2Error(f"sentinelhub's configuration {lib.SHConfig.get_config_location()} cannot be used ({error}); "
                      f"fix it or set SH_PROFILE to one of its profiles.") from None


def _keys(lib, config, credentials):
    """Put the AWS keys into ``config`` (or leave them to boto3's chain); return where they come from."""
    if credentials and credentials.username and credentials.password:
        config.aws_access_key_id, config.aws_secret_access_key = credentials.username, credentials.password
        config.aws_session_token = ""
        return "AUTH"
    if config.aws_access_key_id and config.aws_secret_access_key:
        return "sentinelhub's configuration"
    try:
        found = lib.boto3.Session().get_credentials()
    except lib.botocore.exceptions.BotoCoreError as error:  # e.g. AWS_PROFILE names no profile
        raise ParameterError("AUTH", f"the AWS configuration cannot be used ({error}).") from None
    if found is None:
        raise ParameterError("AUTH", NO_KEYS)
    return "the AWS environment or profile"


@contextlib.contextmanager
def _overrides(lib, config, log):
    """Point sentinelhub at another S3 endpoint and metadata host while the block runs (module docstring)."""
    endpoint = os.environ.get(ENDPOINT_ENV, "").strip()
    metadata = os.environ.get(METADATA_ENV, "").strip().rstrip("/")
    if not endpoint and not metadata:
        yield
        return
    with _ENV_LOCK, tempfile.TemporaryDirectory(prefix="sentinel2-sentinelhub-") as home:
        changes = {"AWS_ENDPOINT_URL_S3": endpoint} if endpoint else {}
        if metadata:
            config.aws_metadata_url = metadata
            changes.update(XDG_CONFIG_HOME=home, SH_PROFILE=lib.DEFAULT_PROFILE)
        with _environment(changes):
            if metadata:
                _save_profile(config)
            log(f"AWS: using S3 endpoint {http.redact_url(endpoint) if endpoint else 'of AWS'} and metadata host "
                f"{http.redact_url(config.aws_metadata_url)}.")
            yield


@contextlib.contextmanager
def _environment(changes):
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _save_profile(config):
    """Our hosts as the default profile of the private configuration (never the keys: they stay in memory)."""
    profile = config.copy()
    for name in type(config).CREDENTIALS:
        setattr(profile, name, "")
    profile.save()


# ---- one product ---------------------------------------------------------------------------------------------

def _product(lib, footprint, folder, config, options, progress, is_cancelled, log):
    name = re.sub(r"(\.SAFE|\.zip)$", "", os.path.basename(footprint.name or ""))
    if parse_product_name(name).get("level") != "L1C":
        return Result(footprint, "failed", None, (
            f"{footprint.name or footprint.id}: the aws source rebuilds Level-1C products only (from the bucket "
            f"{config.aws_s3_l1c_bucket}); choose the cdse source for it."))
    final = os.path.join(folder, f"{name}.SAFE")
    if os.path.isdir(final) and _complete(final):
        return Result(footprint, "skipped", final)
    work = os.path.join(folder, f".{name}.SAFE.aws")
    try:
        problem = _rebuild(lib, name, work, config, options, progress, is_cancelled, log)
    except Cancelled:
        raise
    except Exception as error:  # noqa: BLE001 (whatever sentinelhub, boto3 or requests raise: one sentence)
        return Result(footprint, "failed", None, _reason(lib, name, config, error))  # work kept for a resume
    if problem:
        files.remove(work)  # the bucket lacks what Sen2Cor needs: nothing worth resuming
        return Result(footprint, "failed", None, problem)
    files.move_into_place(os.path.join(work, f"{name}.SAFE"), final)  # swaps out a broken earlier copy
    files.remove(work)
    return Result(footprint, "downloaded", final)


def _complete(path):
    """True when the .SAFE already in the output folder is Sen2Cor-ready (once its empty folders are made)."""
    try:
        safe.repair(path)
    except S2Error:  # a folder we may not write to: say what is wrong with it instead
        pass
    return not safe.check(path, level="L1C")


def _rebuild(lib, name, work, config, options, progress, is_cancelled, log):
    """Fetch the product into ``work`` and check it; None when it is Sen2Cor-ready, else why not."""
    request = _request(lib, name, work, config)
    if isinstance(request, str):
        return request
    _forget_unverified(lib, request, work, config)
    missing = _fetch(lib, request, max(int(options.parallel), 1), progress, is_cancelled, name)
    needed = _required(lib)
    lacking = [item for item in missing if item.extra_params["data_name"] in needed]
    if lacking:
        return (f"{name}: the bucket {config.aws_s3_l1c_bucket} lacks {len(lacking)} file(s) Sen2Cor needs, such as "
                f"{_safe_path(lacking[0])}; choose the cdse source for it.")
    if missing:
        shown = ", ".join(os.path.basename(item.filename) for item in missing[:3])
        log(f"{name}: {len(missing)} optional file(s) are not in the bucket and were left out ({shown}"
            f"{', ...' if len(missing) > 3 else ''}).")
    product = os.path.join(work, f"{name}.SAFE")
    safe.repair(product)
    problems = safe.check(product, level="L1C")
    return f"{name}: the .SAFE rebuilt from the bucket is not usable: {problems[0]}" if problems else None


def _request(lib, name, work, config):
    """The AwsProductRequest (it reads productInfo.json and the tiles' metadata now), or why there is none."""
    try:
        return lib.AwsProductRequest(product_id=name, data_folder=work, safe_format=True, config=config)
    except lib.DownloadFailedException as error:
        if _status(error) not in (403, 404):
            raise
        return (f"{name} is not in the AWS bucket {config.aws_s3_l1c_bucket}: "
                f"{http.host_of(config.aws_metadata_url)} has no metadata for it; choose the cdse source for it.")


def _required(lib):
    """What Sen2Cor cannot do without (reference/processors.md §1.6), by sentinelhub's data names."""
    constants = lib.AwsConstants
    return set(constants.S2_L1C_BANDS) | {constants.METADATA, constants.DATASTRIP_METADATA, constants.MANIFEST,
                                          constants.ECMWFT}


def _forget_unverified(lib, request, work, config):
    """Delete what an interrupted run left that cannot be trusted: bucket files whose size differs from the
    object's, and the small metadata files (fetched again rather than checked)."""
    if not os.path.isdir(work):
        return
    client = None
    try:
        for item in request.get_download_list():
            path = os.path.join(work, item.filename)
            if not os.path.isfile(path):
                continue
            if item.url.startswith("s3://"):
                client = client or _s3_client(lib, config)
                if _object_size(lib, client, item.url) == os.path.getsize(path):
                    continue
            os.remove(path)
    finally:
        if client is not None:
            client.close()


def _s3_client(lib, config):
    """A client like sentinelhub's own (same keys, same endpoint settings)."""
    return lib.boto3.Session().client("s3", aws_access_key_id=config.aws_access_key_id or None,
                                      aws_secret_access_key=config.aws_secret_access_key or None,
                                      aws_session_token=config.aws_session_token or None)


def _object_size(lib, client, url):
    bucket, key = url[len("s3://"):].split("/", 1)
    try:
        return client.head_object(Bucket=bucket, Key=key, RequestPayer="requester")["ContentLength"]
    except lib.botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            return None
        raise


def _fetch(lib, request, parallel, progress, is_cancelled, name):
    """Download every file of ``request``, ``parallel`` at a time (sentinelhub skips files already on disk);
    return the requests of the files the bucket does not have. Other failures raise."""
    items = request.get_download_list()
    pool = concurrent.futures.ThreadPoolExecutor(parallel, thread_name_prefix="s2-aws")

    def fetch_one(index):
        check_cancelled(is_cancelled)  # a cancel seen between two polls starts no further file
        return request.save_data(data_filter=[index], max_threads=1, raise_download_errors=True)

    futures = {pool.submit(fetch_one, index): item for index, item in enumerate(items)}
    pending, missing = set(futures), []
    try:
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=_POLL)
            missing += [futures[future] for future in done if _is_missing(lib, future.exception())]
            progress((len(items) - len(pending)) / len(items), f"AWS: {name}: {len(items) - len(pending)} of "
                                                               f"{len(items)} files")
            check_cancelled(is_cancelled)
    finally:
        # A file being fetched cannot be interrupted (sentinelhub reads each object whole): on cancel or failure
        # wait for those in flight, so none is written, or sent to the default endpoint once the overrides are
        # gone, after this returns. Queued files are dropped.
        pool.shutdown(wait=True, cancel_futures=True)
    return missing


def _is_missing(lib, error):
    """True when ``error`` says the bucket has no such file; raises any other failure."""
    if error is None:
        return False
    if isinstance(error, lib.AwsDownloadFailedException) or (
            isinstance(error, lib.DownloadFailedException) and _status(error) == 404):
        return True
    raise error


def _status(error):
    response = getattr(getattr(error, "request_exception", None), "response", None)
    return getattr(response, "status_code", None)


def _safe_path(item):
    """The file's path inside the .SAFE, for messages."""
    return item.filename.replace(os.sep, "/").split("/", 1)[-1]


# ---- messages ------------------------------------------------------------------------------------------------

def _reason(lib, name, config, error):
    """One sentence about a failure sentinelhub, boto3 or requests raised for ``name``."""
    bucket = config.aws_s3_l1c_bucket
    exceptions = lib.botocore.exceptions
    if isinstance(error, exceptions.ClientError):
        return _client_error(name, bucket, error)
    if isinstance(error, exceptions.NoCredentialsError) or "Requester Pays" in str(error):
        return f"{name}: {NO_KEYS}"
    if isinstance(error, exceptions.EndpointConnectionError):
        return f"{name}: could not reach the S3 endpoint ({http.redact(str(error))}); check the network connection."
    if isinstance(error, lib.DownloadFailedException):
        cause = getattr(error, "request_exception", None)
        if cause is not None and _status(error) is None:
            return f"{name}: {http.service_error(cause, 'the AWS metadata host')}"
        return (f"{name}: the AWS metadata host {http.host_of(config.aws_metadata_url)} answered HTTP "
                f"{_status(error)}; try again later.")
    if isinstance(error, lib.requests.RequestException):
        return f"{name}: {http.service_error(error, 'the AWS metadata host')}"
    if isinstance(error, OSError):
        return f"{name}: could not write {error.filename or 'the product'} ({error.strerror or error})."
    detail = http.redact(" ".join(str(error).split()))[:200]
    return f"{name}: sentinelhub could not rebuild the product ({type(error).__name__}: {detail})."


def _client_error(name, bucket, error):
    details = error.response.get("Error", {})
    code, message = details.get("Code", ""), http.redact(details.get("Message", ""))
    if code in ("AccessDenied", "AllAccessDisabled", "403"):
        return (f"{name}: AWS denied access to the bucket {bucket} ({code}); the keys must belong to an AWS "
                f"account allowed to read requester-pays buckets (s3:GetObject), which pays the transfer.")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
        return f"{name}: AWS rejected the access keys ({code}); check AUTH or the AWS environment or profile."
    if code == "NoSuchBucket":
        return f"{name}: the S3 endpoint has no bucket {bucket}; check {ENDPOINT_ENV} or AWS_ENDPOINT_URL_S3."
    return f"{name}: S3 answered {code or 'an error'} ({message or error})."


def _line(result):
    """The per-product log line."""
    name = result.footprint.name
    if result.status == "downloaded":
        return f"Downloaded {name} from AWS as {os.path.basename(result.path)}."
    if result.status == "skipped":
        return f"Skipped {name}: already complete in the output folder."
    return f"Failed: {result.reason}"
