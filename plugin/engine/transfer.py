"""The one download engine every source uses (CDSE, AWS, DHuS, STAC assets, DEM tiles, L3A files).

What :func:`download_all` does for a batch of :class:`Transfer` jobs:
- runs at most ``parallel`` downloads at once (CDSE allows 4 connections per user);
- streams each body to ``<dest>.part`` in 1 MiB chunks and renames it to ``dest`` only once verified, so a file
  at ``dest`` is always complete;
- resumes a ``.part`` left by a drop, a cancel or a killed process with ``Range: bytes=N-``, accepting only a 206
  whose Content-Range starts at N; a server that ignores Range (200) is restarted cleanly from byte 0;
- verifies the checksum (MD5, SHA256, SHA3-256 with hashlib; BLAKE3 when the ``blake3`` package is installed)
  or else the size, hashing while writing (in a thread of its own, so hashing overlaps reading and writing) so a
  big file is not read twice; a bad copy is deleted and downloaded again a few times before the product fails;
- retries dropped bodies, 429 and 5xx with backoff (honouring Retry-After), on top of the session's own
  retries of whole requests; on 401 it calls ``on_unauthorized()`` (the CDSE source refreshes its token) and
  resumes;
- skips products already complete and verified, reports progress in bytes over the batch, and on cancel stops
  every worker within about a second, leaving resumable ``.part`` files.

Callbacks (``progress``, ``is_cancelled``, ``log``) are only called from the thread that called
:func:`download_all`, so QGIS feedback objects are safe to pass; ``auth`` and ``on_unauthorized`` run in the
worker threads.
"""

import concurrent.futures
import email.utils
import hashlib
import os
import queue
import re
import shutil
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import files, http
from .errors import Cancelled, ParameterError, S2Error, ServiceError

CHUNK = 1 << 20
ATTEMPTS = 8  # consecutive attempts without new bytes before a product fails
VERIFY_ATTEMPTS = 3  # complete copies that failed verification before a product fails
MAX_WAIT = 60.0  # cap of every wait between attempts (backoff and Retry-After), seconds
MAX_REDIRECTS = 10
CANCEL_GRACE = 1.5  # how long a cancel waits for workers to wind down before raising
PROGRESS_EVERY = 0.25  # seconds between progress reports
DOWNLOADED, SKIPPED, FAILED = "downloaded", "skipped", "failed"

_HASHLIB_NAMES = {"MD5": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512", "SHA3-256": "sha3_256"}
_ALGORITHMS = frozenset(_HASHLIB_NAMES) | {"BLAKE3"}
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


@dataclass
class Transfer:
    """One file to download.

    ``size``: expected bytes, None (or 0, as CDSE says when it does not know) when unknown.
    ``checksum``: ``'MD5:<hex>'``, ``'BLAKE3:<hex>'``, ``'SHA256:<hex>'``, ``'SHA3-256:<hex>'`` or ``''``.
    ``headers``: fixed request headers, sent to every host (also after redirects), so no credentials here.
    ``auth(url) -> dict``: extra headers for a request to ``url``, asked
    before every request and after every redirect, so a refreshed token is used and a token is only sent to
    the hosts the source trusts (return ``{}`` for the others). ``name``: the product name used in messages.
    """

    url: str
    dest: str
    size: Optional[int] = None
    checksum: str = ""
    headers: dict = field(default_factory=dict)
    auth: Optional[Callable[[str], dict]] = None
    name: str = ""

    def __post_init__(self):
        self.dest = os.fspath(self.dest)
        self.size = int(self.size) if self.size else None
        self.name = self.name or os.path.basename(self.dest)
        self.checksum = _normalised_checksum(self.checksum or "")

    @property
    def part(self):
        return self.dest + ".part"

    @property
    def algorithm(self):
        return self.checksum.partition(":")[0] if self.checksum else ""

    @property
    def digest(self):
        return self.checksum.partition(":")[2]


def _normalised_checksum(text):
    algorithm, _, digest = text.strip().partition(":")
    if not text.strip():
        return ""
    algorithm = algorithm.upper().replace("_", "-")
    if algorithm not in _ALGORITHMS or not re.fullmatch(r"[0-9a-fA-F]+", digest):
        raise ValueError(f"unsupported checksum {text!r}; expected one of {sorted(_ALGORITHMS)} as 'ALG:hex'")
    return f"{algorithm}:{digest.lower()}"


@dataclass
class Outcome:
    """What happened to one :class:`Transfer`: ``status`` is downloaded, skipped or failed (with ``reason``, one
    sentence naming the product); ``received`` is the bytes that came over the network in this run."""

    transfer: Transfer
    status: str
    reason: str = ""
    received: int = 0

    @property
    def path(self):
        return self.transfer.dest

    def line(self):
        """The per-product log line."""
        if self.status == FAILED:
            return f"Failed: {self.reason}"
        if self.status == SKIPPED:
            return f"Skipped {self.transfer.name}: already complete and verified."
        return f"Downloaded {self.transfer.name} ({_megabytes(self.received)} MB received)."


@dataclass
class Report:
    outcomes: list

    def _with(self, status):
        return [outcome for outcome in self.outcomes if outcome.status == status]

    @property
    def downloaded(self):
        return self._with(DOWNLOADED)

    @property
    def skipped(self):
        return self._with(SKIPPED)

    @property
    def failed(self):
        return self._with(FAILED)

    @property
    def received(self):
        return sum(outcome.received for outcome in self.outcomes)

    def lines(self):
        return [outcome.line() for outcome in self.outcomes]


# ---- public entry points ---------------------------------------------------------------------------------


def download_all(transfers, session, parallel=4, progress=None, is_cancelled=None, log=None,
                 on_unauthorized=None, attempts=ATTEMPTS, backoff=1.0):
    """Download every transfer (see the module docstring) and return a :class:`Report`.

    Raises :class:`ParameterError` (``OUTPUT_FOLDER``) before any request when a destination folder cannot be
    created or written or lacks the free space for the known sizes, and :class:`Cancelled` on cancel. Product
    failures do not raise: they are in the report. ``backoff``: the first wait after a failed attempt in
    seconds, doubled after each further attempt without progress (capped at a minute).
    """
    transfers = list(transfers)
    if int(parallel) < 1:
        raise ParameterError("PARALLEL", "at least one parallel download is needed.")
    _check_destinations(transfers)
    if is_cancelled is not None and is_cancelled():
        raise Cancelled()
    batch = _Batch(session, on_unauthorized, attempts, backoff)
    jobs = [_Job(batch, transfer) for transfer in transfers]
    if not jobs:
        return Report([])
    pool = concurrent.futures.ThreadPoolExecutor(min(int(parallel), len(jobs)), thread_name_prefix="s2-transfer")
    futures = [pool.submit(job.run) for job in jobs]
    try:
        _supervise(batch, jobs, futures, progress, is_cancelled, log)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return Report([future.result() for future in futures])


def fetch_to_file(url, dest, session, size=None, checksum="", headers=None, auth=None, name=None, progress=None,
                  is_cancelled=None, log=None, on_unauthorized=None, backoff=1.0):
    """Download one file with the same engine; returns ``dest``, raises :class:`ServiceError` when it fails."""
    transfer = Transfer(url, dest, size, checksum, dict(headers or {}), auth, name or "")
    report = download_all([transfer], session, 1, progress, is_cancelled, log, on_unauthorized, backoff=backoff)
    if report.failed:
        raise ServiceError(report.failed[0].reason)
    return transfer.dest


def check_free_space(folder, bytes_needed):
    """Raise :class:`ParameterError` on ``OUTPUT_FOLDER`` when ``folder``'s file system has less than
    ``bytes_needed`` free."""
    free = shutil.disk_usage(folder).free
    if bytes_needed > free:
        raise ParameterError("OUTPUT_FOLDER", (
            f"the downloads need {_size_text(bytes_needed)} but only {_size_text(free)} are free in {folder}; "
            f"free some space or choose another folder."))


def _check_destinations(transfers):
    """Create the destination folders and check they are writable and have room for what is left to fetch."""
    dests = [t.dest for t in transfers]
    if len(set(dests)) != len(dests):
        raise ValueError("two transfers write the same destination file")
    needed = {}
    for transfer in transfers:
        folder = os.path.dirname(os.path.abspath(transfer.dest))
        needed[folder] = needed.get(folder, 0) + _bytes_missing(transfer)
    by_device = {}  # folders on one file system share its free space
    for folder, count in needed.items():
        files.writable_folder(folder)
        by_device.setdefault(os.stat(folder).st_dev, [0, folder])[0] += count
    for count, folder in by_device.values():
        check_free_space(folder, count)


def _bytes_missing(transfer):
    if not transfer.size or os.path.exists(transfer.dest):
        return 0
    return max(transfer.size - _file_size(transfer.part), 0)


# ---- the calling thread: progress, log, cancel -------------------------------------------------------------


def _supervise(batch, jobs, futures, progress, is_cancelled, log):
    pending = set(futures)
    last_report = 0.0
    while pending:
        done, pending = concurrent.futures.wait(pending, timeout=0.1)
        batch.deliver_log(log)
        if is_cancelled is not None and is_cancelled():
            _cancel(batch, pending)
            batch.deliver_log(log)
            raise Cancelled()
        for future in done:
            if log is not None and future.exception() is None:
                log(future.result().line())
        if progress is not None and (not pending or time.monotonic() - last_report >= PROGRESS_EVERY):
            progress(*_progress_report(jobs, len(futures) - len(pending)))
            last_report = time.monotonic()


def _cancel(batch, pending):
    """Stop the workers: the flag ends their chunk loops and waits; shutting the sockets down ends reads that
    a stalled server would otherwise keep blocked until the read timeout."""
    batch.stop.set()
    batch.abort_responses()
    concurrent.futures.wait(pending, timeout=CANCEL_GRACE)


def _progress_report(jobs, finished):
    total = sum(job.size or 0 for job in jobs)
    done = sum(job.on_disk for job in jobs)
    fraction = min(done / total, 1.0) if total else finished / len(jobs)
    message = f"{_megabytes(done)} of {_megabytes(total)} MB, {finished} of {len(jobs)} files"
    return fraction, message


# ---- shared state of a batch --------------------------------------------------------------------------------


class _Batch:
    """What the workers of one :func:`download_all` call share."""

    def __init__(self, session, on_unauthorized, attempts, backoff):
        self.session = session
        self.on_unauthorized = on_unauthorized
        self.attempts = max(int(attempts), 1)
        self.backoff = backoff
        self.stop = threading.Event()
        self.messages = queue.SimpleQueue()  # delivered to ``log`` by the calling thread
        self.auth_lock = threading.Lock()
        self.auth_generation = 0
        self.responses = set()
        self.responses_lock = threading.Lock()
        self.warned = set()

    def log(self, text):
        self.messages.put(http.redact(text))

    def log_once(self, key, text):
        with self.responses_lock:
            if key in self.warned:
                return
            self.warned.add(key)
        self.log(text)

    def deliver_log(self, log):
        while not self.messages.empty():
            text = self.messages.get()
            if log is not None:
                log(text)

    def check(self):
        if self.stop.is_set():
            raise Cancelled()

    def wait(self, seconds):
        if self.stop.wait(max(seconds, 0)):
            raise Cancelled()

    def refresh_auth(self, generation):
        """Call ``on_unauthorized`` once for all workers that were refused with the same credentials."""
        with self.auth_lock:
            if generation == self.auth_generation:
                self.on_unauthorized()
                self.auth_generation += 1

    def track(self, response):
        with self.responses_lock:
            self.responses.add(response)
        if self.stop.is_set():  # cancelled while the request was on its way
            _shutdown(response)

    def untrack(self, response):
        with self.responses_lock:
            self.responses.discard(response)
        response.close()

    def abort_responses(self):
        with self.responses_lock:
            for response in list(self.responses):
                _shutdown(response)


def _shutdown(response):
    """Make a blocked read on ``response`` return now (works from any thread, unlike closing the file)."""
    connection = getattr(response.raw, "connection", None) or getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Retry(Exception):
    """This attempt failed in a way another attempt may fix; ``after``: seconds to wait (None: backoff)."""

    def __init__(self, reason, after=None):
        super().__init__(reason)
        self.reason = reason
        self.after = after


class _Failed(Exception):
    """The product cannot be downloaded; the message is the one-sentence reason."""


def _network_errors():
    import requests
    import urllib3.exceptions

    return requests.RequestException, urllib3.exceptions.HTTPError, OSError


# ---- one transfer -------------------------------------------------------------------------------------------


class _Job:
    """The state of one transfer across its attempts (runs in a worker thread)."""

    def __init__(self, batch, transfer):
        self.batch = batch
        self.t = transfer
        self.size = transfer.size  # learned from the server when the catalogue did not say
        self.on_disk = 0  # bytes in the .part (or dest) now, for progress
        self.received = 0
        self.failures = 0
        self.bad_copies = 0
        self.refused = False  # a 401 was answered with new credentials and no byte came since
        self.use_range = True
        self.hasher = self._new_hasher()
        self.hashed = 0  # bytes of the .part fed to ``hasher``

    def run(self):
        try:
            return self._run()
        finally:
            if self.hasher is not None:
                self.hasher.close()

    def _run(self):
        try:
            if self._already_complete():
                return Outcome(self.t, SKIPPED)
            self._download()
            return Outcome(self.t, DOWNLOADED, received=self.received)
        except _Failed as failure:
            return Outcome(self.t, FAILED, http.redact(str(failure)), self.received)
        except S2Error as error:  # e.g. the token refresh failed: say why
            if isinstance(error, Cancelled):
                raise
            return Outcome(self.t, FAILED, f"{self.t.name}: {error}", self.received)
        except OSError as error:
            reason = f"{self.t.name}: could not write {error.filename or self.t.part} ({error.strerror})."
            return Outcome(self.t, FAILED, reason, self.received)

    def _new_hasher(self):
        algorithm = self.t.algorithm
        if not algorithm:
            return None
        if algorithm != "BLAKE3":
            return _BackgroundHash(hashlib.new(_HASHLIB_NAMES[algorithm]))
        try:
            import blake3
        except ImportError:
            self.batch.log_once("blake3", "BLAKE3 checksums cannot be checked without the Python package 'blake3'; "
                                          "those products are verified by size only.")
            return None
        return _BackgroundHash(blake3.blake3())

    # -- skip --------------------------------------------------------------------------------------------

    def _already_complete(self):
        dest = self.t.dest
        if not os.path.exists(dest):
            return False
        actual = os.path.getsize(dest)
        expected = self.size if (self.size or self.hasher) else self._remote_size()
        problem = None
        if expected is not None and actual != expected:
            problem = f"has {actual} bytes instead of {expected}"
        elif self.hasher is not None and self._file_digest(dest, actual) != self.t.digest:
            problem = f"does not match its {self.t.algorithm} checksum"
        if problem is None:
            self.size = self.size or actual
            self.on_disk = actual
            if os.path.exists(self.t.part):  # left by a run that was killed after the rename
                os.remove(self.t.part)
            return True
        self.batch.log(f"{self.t.name}: the existing file {problem}; downloading it again.")
        os.remove(dest)
        self._reset_hash()
        return False

    def _remote_size(self):
        """Content-Length from one HEAD, to check an existing file of unknown size; None when unknown."""
        try:
            response = self._open("HEAD", 0)
        except (_Retry, _Failed):
            return None
        self.batch.untrack(response)
        return _content_length(response) if response.status_code == 200 else None

    # -- download loop -----------------------------------------------------------------------------------

    def _download(self):
        while True:
            self.batch.check()
            before = _file_size(self.t.part)
            try:
                self._attempt()
                return
            except _Retry as retry:
                problem, wait = retry.reason, retry.after
            self.failures = 0 if _file_size(self.t.part) > before else self.failures + 1
            if self.failures >= self.batch.attempts:
                raise _Failed(f"{self.t.name}: gave up after {self.failures} attempts without progress; "
                              f"last problem: {_clause(problem)}.")
            wait = min(self.batch.backoff * 2 ** max(self.failures - 1, 0), MAX_WAIT) if wait is None else wait
            self.batch.log(f"{self.t.name}: {_clause(problem)}; retrying in {wait:.1f} s.")
            self.batch.wait(wait)

    def _attempt(self):
        """One request; returns once the file is verified and in place, raises :class:`_Retry` otherwise."""
        offset = self._prepare_part()
        if self.size is not None and offset == self.size:
            return self._finish()  # a complete .part from an earlier run: verify it without a request
        response = self._open("GET", offset)
        try:
            start = self._accept(response, offset)
            if start is not None:
                self._stream(response, start)
        finally:
            self.batch.untrack(response)
        return self._finish()

    def _prepare_part(self):
        """The usable length of the .part (0 when there is none or it cannot be resumed)."""
        offset = _file_size(self.t.part)
        if offset and (not self.use_range or (self.size is not None and offset > self.size)):
            os.remove(self.t.part)
            offset = 0
        if self.hasher is not None and self.hashed != offset:
            self._reset_hash()
            if offset:
                self._hash_into(self.t.part, offset)  # bytes from an earlier run: hash them once
        self.on_disk = offset
        return offset

    def _open(self, method, offset):
        """Send the request, following redirects here so ``auth`` decides per host which headers to send."""
        url = self.t.url
        for _ in range(MAX_REDIRECTS):
            generation = self.batch.auth_generation
            headers = {"Accept-Encoding": "identity", **self.t.headers, **((self.t.auth and self.t.auth(url)) or {})}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                response = self.batch.session.request(method, url, headers=headers, stream=True,
                                                      allow_redirects=False)
            except _network_errors() as error:
                self.batch.check()
                raise _Retry(str(http.service_error(error, url=url))) from None
            if not response.is_redirect:
                response.auth_generation = generation
                self.batch.track(response)
                return response
            url = urllib.parse.urljoin(url, response.headers["Location"])
            response.close()
        raise _Failed(f"{self.t.name}: {http.host_of(self.t.url)} redirected more than {MAX_REDIRECTS} times.")

    def _accept(self, response, offset):
        """Where to write this response's body from (None: no body, verify the .part as it is)."""
        status = response.status_code
        if status == 200:
            if offset:
                self.batch.log(f"{self.t.name}: the server ignored the Range request; restarting from the start.")
            self._learn_size(_content_length(response))
            return 0
        if status == 206:
            return self._accept_range(response, offset)
        if status == 416:  # nothing left after ``offset``: the .part may already be complete
            self._learn_size(_content_range(response)[2])
            return None
        if status == 401 and self.batch.on_unauthorized is not None and not self.refused:
            self.refused = True
            self.batch.refresh_auth(response.auth_generation)
            raise _Retry("the server asked for new credentials", after=0)
        if status == 429 or status >= 500:
            raise _Retry(http.status_message(response), after=_retry_after(response))
        raise _Failed(f"{self.t.name}: {http.status_message(response)}")

    def _accept_range(self, response, offset):
        first, _, total = _content_range(response)
        if first != offset or (self.size is not None and total is not None and total != self.size):
            self.use_range = False  # not the bytes we asked for: the next attempt starts from 0 without Range
            raise _Retry(f"the server answered a different range ({response.headers.get('Content-Range')})", 0)
        self._learn_size(total)
        return offset

    def _learn_size(self, size):
        if size is None:
            return
        if self.size is None:
            self.size = size
        elif size != self.size:
            raise _Failed(f"{self.t.name}: the server offers {size} bytes but the catalogue says {self.size}; "
                          f"the product may have been replaced, search again.")

    def _stream(self, response, offset):
        """Write the body to the .part from ``offset``; a broken body raises :class:`_Retry` (resumable)."""
        length = _content_length(response)
        got = 0
        if offset == 0:
            self._reset_hash()
        with open(self.t.part, "ab" if offset else "wb", buffering=0) as part:
            chunks = _body_chunks(response)
            while True:
                chunk = self._next_chunk(chunks, offset + got)
                if chunk is None:
                    break
                self.batch.check()
                self._write(part, chunk)
                got += len(chunk)
        if length is not None and got < length:  # sessions not made by http.new_session do not raise
            raise _Retry(f"the body ended after {_megabytes(offset + got)} MB")

    def _next_chunk(self, chunks, position):
        try:
            return next(chunks, None)
        except _network_errors():
            self.batch.check()  # a cancel shuts the socket down: that is not a network failure
            raise _Retry(f"the connection broke after {_megabytes(position)} MB") from None

    def _write(self, part, chunk):
        view = memoryview(chunk)
        while view:
            view = view[part.write(view):]
        if self.hasher is not None:
            self.hasher.update(chunk)
            self.hashed += len(chunk)
        self.on_disk += len(chunk)
        self.received += len(chunk)
        self.refused = False

    # -- verification --------------------------------------------------------------------------------------

    def _finish(self):
        problem = self._verify_part()
        if problem is None:
            os.replace(self.t.part, self.t.dest)
            return
        os.remove(self.t.part)
        self._reset_hash()
        self.on_disk = 0
        self.bad_copies += 1
        if self.bad_copies >= VERIFY_ATTEMPTS:
            raise _Failed(f"{self.t.name}: {problem} in {self.bad_copies} downloads; the server keeps sending "
                          f"different bytes, try again later.")
        raise _Retry(f"{problem}, downloading it again", after=0)

    def _verify_part(self):
        """None when the .part is right, else what is wrong with it."""
        actual = _file_size(self.t.part)
        if self.size is not None and actual != self.size:
            return f"size mismatch (expected {self.size} bytes, got {actual})"
        if self.hasher is None:
            return None
        if self.hashed != actual:
            self._reset_hash()
            self._hash_into(self.t.part, actual)
        digest = self.hasher.hexdigest()
        if digest != self.t.digest:
            return f"checksum mismatch ({self.t.algorithm} expected {self.t.digest[:12]}…, got {digest[:12]}…)"
        return None

    def _reset_hash(self):
        if self.hasher is not None:
            self.hasher.close()
        self.hasher = self._new_hasher()
        self.hashed = 0

    def _hash_into(self, path, length):
        with open(path, "rb", buffering=0) as stream:
            while self.hashed < length:
                self.batch.check()
                block = stream.read(min(CHUNK, length - self.hashed))
                if not block:
                    break
                self.hasher.update(block)
                self.hashed += len(block)

    def _file_digest(self, path, length):
        self._reset_hash()
        self._hash_into(path, length)
        digest = self.hasher.hexdigest()
        self._reset_hash()
        return digest


class _BackgroundHash:
    """A hash object fed from a thread of its own: ``update`` queues the block and returns, so hashing (hashlib and
    blake3 release the GIL on large blocks) runs on another core while the next block is read and written. At most
    QUEUED blocks wait (bounded memory); ``hexdigest`` waits for the queue to drain."""

    QUEUED = 16

    def __init__(self, hasher):
        self._hasher = hasher
        self._blocks = queue.Queue(maxsize=self.QUEUED)
        self._digest = None
        self._thread = threading.Thread(target=self._run, name="sentinel2-hash", daemon=True)
        self._thread.start()

    def _run(self):
        for block in iter(self._blocks.get, None):
            self._hasher.update(block)

    def update(self, block):
        self._blocks.put(bytes(block) if isinstance(block, memoryview) else block)

    def hexdigest(self):
        if self._digest is None:
            self.close()
            self._digest = self._hasher.hexdigest()
        return self._digest

    def close(self):
        """End the thread once the queued blocks are hashed (idempotent)."""
        if self._thread.is_alive():
            self._blocks.put(None)
            self._thread.join()


# ---- small helpers -----------------------------------------------------------------------------------------


def _body_chunks(response):
    """The body in pieces of up to CHUNK bytes, each handed over as soon as it arrived.

    urllib3 2 (Debian testing, QGIS 3.44) drops the bytes of a ``read(amt)`` that a broken connection cut short, so
    a resume would start before them; ``read1`` returns what one socket read gave, and a drop loses nothing already
    received. urllib3 1 (Debian 12) has no ``read1`` on its responses and its ``read(amt)`` keeps partial data.
    """
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:
        return response.iter_content(CHUNK)
    return iter(lambda: read1(CHUNK), b"")


def _file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _content_length(response):
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _content_range(response):
    """(first, last, total) of a Content-Range header, None for the parts it does not give."""
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range") or "")
    if not match:
        return None, None, None
    return tuple(int(value) if value and value.isdigit() else None for value in match.groups())


def _retry_after(response):
    """Seconds a 429/503 asks us to wait (capped), None when it does not say."""
    value = (response.headers.get("Retry-After") or "").strip()
    if value.isdigit():
        return min(float(value), MAX_WAIT)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(moment.timestamp() - time.time(), 0.0), MAX_WAIT)


def _clause(text):
    """``text`` fit to sit inside a sentence: no final full stop."""
    return str(text).rstrip(". ")


def _megabytes(count):
    return f"{count / 1e6:.1f}"


def _size_text(count):
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"
