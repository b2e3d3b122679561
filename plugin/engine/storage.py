"""Where an algorithm's output folder is: a local folder or ``s3://bucket/prefix`` (S3 or an S3-compatible store).

Files are always made locally first (in the folder itself, or for S3 in a staging folder) under hidden names,
and published when complete: renamed into place locally, or uploaded with GDAL's ``/vsis3/`` (one PUT, or a
multipart upload that S3 only shows once it is completed), so a bucket never holds a half-written object under
its final name. GDAL is what QGIS already ships; no boto3 is needed.

Credentials: given explicitly (a QGIS authentication configuration: user name = access key id, password =
secret key; its URL, when set, = the endpoint), else what GDAL reads itself: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and ``~/.aws``. The endpoint of an
S3-compatible store (MinIO...) comes from the configuration's URL, else ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` (the AWS tools' names), else GDAL's ``AWS_S3_ENDPOINT``. Settings are GDAL path-specific
options of the bucket only, so the rest of QGIS's GDAL configuration is untouched; nothing is logged of them.
"""

import dataclasses
import os
import re
import shutil
import tempfile
import threading
import urllib.parse

from .errors import ParameterError, S2Error

S3_URL = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")
CHUNK = 8 * 1024 * 1024
_LOCK = threading.Lock()


@dataclasses.dataclass
class Credentials:
    access_key: str = None
    secret_key: str = None
    endpoint: str = None  # "http://127.0.0.1:9000" or "https://s3.example.org"
    region: str = None

    def __repr__(self):  # never show the secret in a traceback or a log
        return f"Credentials(access_key={'***' if self.access_key else None}, endpoint={self.endpoint!r})"


def is_remote(folder):
    return str(folder or "").lower().startswith("s3://")


def output_for(folder, parameter="OUTPUT_FOLDER", credentials=None, environ=None):
    """The :class:`LocalOutput` or :class:`S3Output` for a folder parameter's value."""
    if is_remote(folder):
        return S3Output(folder, parameter, credentials, environ)
    if not folder:
        raise ParameterError(parameter, "choose an output folder.")
    return LocalOutput(folder, parameter)


class LocalOutput:
    def __init__(self, folder, parameter="OUTPUT_FOLDER"):
        self.folder, self.parameter = os.path.abspath(folder), parameter

    def describe(self):
        return self.folder

    def prepare(self):
        from .files import writable_folder

        writable_folder(self.folder, self.parameter)

    def staging_folder(self):
        os.makedirs(self.folder, exist_ok=True)
        return self.folder

    def location(self, name):
        return os.path.join(self.folder, name)

    def has(self, name, metadata=None):
        """``name`` is there (with these GDAL metadata items, when given)."""
        path = self.location(name)
        return os.path.isfile(path) and _metadata_matches(path, metadata)

    def publish(self, local_path, name):
        final = self.location(name)
        os.replace(local_path, final)
        return final

    def withdraw(self, name):
        from .files import remove

        remove(self.location(name))

    def cleanup(self):
        pass


class S3Output:
    def __init__(self, url, parameter="OUTPUT_FOLDER", credentials=None, environ=None):
        match = S3_URL.match(url.rstrip("/"))
        if not match:
            raise ParameterError(parameter, f"{url} is not an S3 location; write s3://bucket/prefix.")
        self.url, self.parameter = url.rstrip("/"), parameter
        self.bucket, self.prefix = match.group("bucket"), (match.group("prefix") or "").strip("/")
        self.credentials = credentials or Credentials()
        self.environ = os.environ if environ is None else environ
        self._staging = None

    def describe(self):
        endpoint = self._endpoint()
        return self.url + (f" (endpoint {endpoint})" if endpoint else "")

    @property
    def vsi_root(self):
        return f"/vsis3/{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def location(self, name):
        """Where QGIS and GDAL read the file: ``/vsis3/bucket/prefix/name``."""
        return f"{self.vsi_root}/{name}"

    def url_of(self, name):
        return f"{self.url}/{name}"

    def prepare(self):
        """Apply the settings and check that the bucket answers; ParameterError naming the parameter if not."""
        from osgeo import gdal

        self._configure()
        gdal.VSICurlPartialClearCache(f"/vsis3/{self.bucket}")
        gdal.ErrorReset()
        with _BucketCalls():
            found = gdal.VSIStatL(f"/vsis3/{self.bucket}")
            message = gdal.GetLastErrorMsg()
        if found is None:
            why = _reason(message) or "no such bucket, or these credentials may not list it"
            raise ParameterError(self.parameter, f"the bucket {self.bucket} cannot be listed ({why}).")

    def staging_folder(self):
        with _LOCK:
            if self._staging is None:
                self._staging = tempfile.mkdtemp(prefix="s2-s3-staging-")
        return self._staging

    def has(self, name, metadata=None):
        from osgeo import gdal

        with _BucketCalls():
            stat = gdal.VSIStatL(self.location(name))
        return stat is not None and stat.size > 0 and _metadata_matches(self.location(name), metadata)

    def publish(self, local_path, name):
        """Upload a complete file, then remove the local copy; S2Error when the upload fails (nothing is left
        under ``name``)."""
        from osgeo import gdal

        target = self.location(name)
        gdal.ErrorReset()
        with _BucketCalls():
            handle = gdal.VSIFOpenL(target, "wb")
            if handle is None:
                raise S2Error(f"Cannot upload {name} to {self.url}: {_reason(gdal.GetLastErrorMsg())}.")
            failed = False
            with open(local_path, "rb") as source:
                for chunk in iter(lambda: source.read(CHUNK), b""):
                    if gdal.VSIFWriteL(chunk, 1, len(chunk), handle) != len(chunk):
                        failed = True
                        break
            closed = gdal.VSIFCloseL(handle)
            message = gdal.GetLastErrorMsg()
        if failed or closed not in (0, None):
            with _BucketCalls():
                gdal.Unlink(target)
            raise S2Error(f"Cannot upload {name} to {self.url}: {_reason(message) or 'the upload was refused'}.")
        os.remove(local_path)
        gdal.VSICurlPartialClearCache(target)
        return target

    def names(self):
        """The names directly under the prefix (files and folders): what a re-run finds already done."""
        from osgeo import gdal

        gdal.VSICurlPartialClearCache(self.vsi_root)
        with _BucketCalls():
            listing = gdal.ReadDir(self.vsi_root) or []
        return {name.rstrip("/") for name in listing if name not in (".", "..")}

    def upload_tree(self, folder, log=None):
        """Upload every complete file under ``folder`` (hidden names are skipped), keeping relative paths, and
        remove the local copy of each; files already in the bucket with the same size are not sent again. Returns
        the uploaded names."""
        from osgeo import gdal

        sent = []
        for current, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for file in sorted(f for f in files if not f.startswith(".")):
                path = os.path.join(current, file)
                name = os.path.relpath(path, folder).replace(os.sep, "/")
                with _BucketCalls():
                    stat = gdal.VSIStatL(self.location(name))
                if stat is not None and stat.size == os.path.getsize(path):
                    continue
                self.publish(path, name)  # the staging folder goes once the run ends: no copy to keep
                sent.append(name)
        if log and sent:
            log(f"{len(sent)} file(s) uploaded to {self.url}")
        return sent

    def withdraw(self, name):
        """Remove a published file (a product's files are published together or not at all)."""
        from osgeo import gdal

        with _BucketCalls():
            gdal.Unlink(self.location(name))
        gdal.VSICurlPartialClearCache(self.location(name))

    def cleanup(self):
        if self._staging:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    # -- settings ---------------------------------------------------------------------------------------------

    def _endpoint(self):
        return (self.credentials.endpoint or self.environ.get("AWS_ENDPOINT_URL_S3")
                or self.environ.get("AWS_ENDPOINT_URL") or None)

    def _configure(self):
        configure_bucket(self.bucket, self.credentials, self._endpoint())


def configure_bucket(bucket, credentials=None, endpoint=None):
    """GDAL's settings for ``/vsis3/<bucket>`` only: the keys (else GDAL's own AWS environment and profile), and
    for an S3-compatible store its endpoint, path-style addressing and http/https from the endpoint's scheme."""
    from osgeo import gdal

    prefix = f"/vsis3/{bucket}"
    gdal.ClearPathSpecificOptions(prefix)
    credentials = credentials or Credentials()
    options = {}
    if credentials.access_key:
        options["AWS_ACCESS_KEY_ID"] = credentials.access_key
        options["AWS_SECRET_ACCESS_KEY"] = credentials.secret_key or ""
        options["AWS_NO_SIGN_REQUEST"] = "NO"
    if credentials.region:
        options["AWS_REGION"] = credentials.region
    endpoint = credentials.endpoint or endpoint
    if endpoint:
        parsed = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["AWS_S3_ENDPOINT"] = parsed.netloc
        options["AWS_HTTPS"] = "NO" if parsed.scheme == "http" else "YES"
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"  # MinIO and most S3-compatible stores: path-style
    for key, value in options.items():
        gdal.SetPathSpecificOption(prefix, key, value)


def _metadata_matches(path, metadata):
    if not metadata:
        return True
    from osgeo import gdal

    with _BucketCalls():
        dataset = gdal.Open(path)
    if dataset is None:
        return False
    found = dataset.GetMetadata() or {}
    return all(found.get(key) == value for key, value in metadata.items())


def _reason(message):
    """GDAL's message without the request's signature or query (never a credential)."""
    text = re.sub(r"(Signature|X-Amz-[A-Za-z-]+|AWSAccessKeyId)=[^&\s]+", r"\1=***", message or "")
    return text.strip().rstrip(".")


class _BucketCalls:
    """GDAL errors are read from GetLastErrorMsg, not printed to the console; 429/5xx answers and dropped
    connections are retried (GDAL waits 1 s, then longer). GDAL 3.6 reads the retry settings of uploads from
    its configuration only, not per path, so they are set for this thread while it talks to the bucket."""

    RETRY = {"GDAL_HTTP_MAX_RETRY": "4", "GDAL_HTTP_RETRY_DELAY": "1"}

    def __enter__(self):
        from osgeo import gdal

        from .gdalmode import return_codes

        self.mode = return_codes().__enter__()
        gdal.PushErrorHandler("CPLQuietErrorHandler")
        self.saved = {key: gdal.GetThreadLocalConfigOption(key, None) for key in self.RETRY}
        for key, value in self.RETRY.items():
            gdal.SetThreadLocalConfigOption(key, value)

    def __exit__(self, *exc):
        from osgeo import gdal

        for key, value in self.saved.items():
            gdal.SetThreadLocalConfigOption(key, value)
        gdal.PopErrorHandler()
        self.mode.__exit__(*exc)
        return False
