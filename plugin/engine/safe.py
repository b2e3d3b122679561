"""Sentinel-2 .SAFE products on disk: safe archive extraction, inspection, structure checks, the empty folders
Sen2Cor needs, and finding products (and already processed L2A products) in a folder.

What Sen2Cor 2.8 requires of an L1C product (``L2A_Config.create_L2A_UserProduct``, ``L2A_Tables.__init__``; see
reference/processors.md §1.6): a folder named ``S2?_MSIL1C*.SAFE``; ``MTD_MSIL1C.xml``; ``DATASTRIP/DS_*`` with its
metadata; ``GRANULE/L1C_*/MTD_TL.xml``; and the folders it copies with ``shutil.copytree`` (a missing one fails
with "Error in creating L2A User Product"): ``AUX_DATA``, ``DATASTRIP``, ``rep_info`` at product level and
``AUX_DATA``, ``QI_DATA`` in each granule. Products copied from buckets lose empty folders, so :func:`repair`
recreates them (plus ``HTML``, which older versions copied); it never invents data files.
"""

import dataclasses
import datetime as dt
import fnmatch
import os
import posixpath
import re
import shutil
import stat
import tarfile
import xml.etree.ElementTree as ET
import zipfile
import zlib

from . import files
from .callbacks import check_cancelled, no_progress
from .errors import S2Error
from .footprints import parse_product_name

# Zip-bomb guard: refuse when the archive expands to more than BOMB_MIN_BYTES *and* more than MAX_RATIO times its
# compressed size (real products compress about 1:1; JPEG 2000 does not shrink further).
MAX_RATIO = 200
BOMB_MIN_BYTES = 1 << 30
FREE_SPACE_MARGIN = 64 << 20  # room for file-system overhead, so a disk is never filled to the last byte
CHUNK = 1 << 20

PRODUCT_FOLDERS = ("AUX_DATA", "HTML", "rep_info")
GRANULE_FOLDERS = ("AUX_DATA", "QI_DATA")
DATASTRIP_FOLDERS = ("QI_DATA",)

LEVEL_WORDS = {"L1C": "Level-1C", "L2A": "Level-2A"}
PRODUCT_MTD = {"L1C": "MTD_MSIL1C.xml", "L2A": "MTD_MSIL2A.xml"}
# Pre-December-2016 products keep their metadata under long names.
OLD_PRODUCT_MTD = {"L1C": "S2?_OPER_MTD_SAFL1C*.xml", "L2A": "S2?_OPER_MTD_SAFL2A*.xml"}
SEN2COR_L1C_NAMES = ("S2?_MSIL1C*.SAFE", "S2?_OPER_PRD_MSIL1C*.SAFE")  # the masks Sen2Cor matches

_NAME_LEVEL = re.compile(r"^S2[A-D]_(?:OPER_PRD_)?MSI(L1C|L2A)_")
_BASELINE = re.compile(r"_N(\d{2})(\d{2})_")
_GENERATION = re.compile(r"_(\d{8}T\d{6})(?:\.SAFE)?(?:\.zip)?$")
_OLD_NAME = re.compile(r"^S2[A-D]_OPER_PRD_MSIL(?:1C|2A)_\w{4}_\d{8}T\d{6}_R(\d{3})_V(\d{8}T\d{6})_")
_BAND_FILE = re.compile(r"_(B\d[0-9A]|TCI|SCL|AOT|WVP)(?:_(\d{2})m)?\.(?:jp2|tif)$", re.IGNORECASE)
_PRODUCT_SUFFIX = re.compile(r"(?:\.SAFE)?(?:\.zip)?$", re.IGNORECASE)
_ARCHIVE_ERRORS = (OSError, EOFError, RuntimeError, zipfile.BadZipFile, tarfile.TarError, zlib.error)


# ---------------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Entry:
    raw: str  # the name as stored, quoted in messages
    kind: str  # "file", "dir", or why the entry is refused
    size: int
    open: object  # () -> binary file object


def extract_zip(zip_path, target_folder, progress=None, is_cancelled=None, replace=False):
    """Extract a zip (or tar) archive into ``target_folder`` and return the path of its top folder.

    Every entry is validated before anything is written: absolute paths, ``..`` escapes, links, devices, archives
    that do not fit on the disk or expand absurdly are refused with one sentence. Files go to a hidden sibling
    ``.<name>.extracting`` that is renamed when complete, so the final name only ever holds a whole product. When
    the top folder already exists it is returned untouched unless ``replace`` is true.
    """
    progress = progress or no_progress
    label = os.path.basename(zip_path)
    if not os.path.isfile(zip_path):
        raise S2Error(f"The archive {zip_path} does not exist.")
    _make_folder(target_folder)
    archive, entries, compressed = _read_archive(zip_path)
    with archive:
        plan = _plan(label, entries)
        top, strip = _top_folder(plan, label)
        final = os.path.join(target_folder, top)
        if os.path.exists(final) and not replace:
            return final
        total = sum(entry.size for _, entry in plan if entry.kind == "file")
        _check_size(label, total, compressed, target_folder)
        temp = os.path.join(target_folder, f".{top}.extracting")
        files.remove(temp)  # left behind by an interrupted run: never a complete product
        try:
            os.makedirs(temp)
            _write_all(plan, temp, strip, total, progress, is_cancelled, label)
            files.move_into_place(temp, final)
        except BaseException as error:  # cancel and Ctrl+C too: nothing half-extracted stays behind
            files.remove(temp)
            if isinstance(error, _ARCHIVE_ERRORS):
                reason = getattr(error, "strerror", None) or error  # "No space left on device", not errno noise
                raise S2Error(f"The archive {label} could not be extracted: {reason}.") from error
            raise
    progress(1.0, f"Extracted {label}")
    return final


def _read_archive(path):
    """(archive to close, entries, compressed bytes) for a zip or tar file."""
    try:
        if zipfile.is_zipfile(path):
            archive = zipfile.ZipFile(path)
            infos = archive.infolist()
            return archive, [_zip_entry(archive, info) for info in infos], sum(i.compress_size for i in infos)
        if tarfile.is_tarfile(path):
            archive = tarfile.open(path, "r:*")
            return archive, [_tar_entry(archive, m) for m in archive.getmembers()], os.path.getsize(path)
    except _ARCHIVE_ERRORS as error:
        raise S2Error(f"The archive {os.path.basename(path)} cannot be read: {error}.") from error
    raise S2Error(f"The file {os.path.basename(path)} is not a zip or tar archive, or it is damaged.")


def _zip_entry(archive, info):
    # Unix tools store the file mode in the high 16 bits: that is where a symbolic link or a device shows.
    refused = _refused_mode(info.external_attr >> 16)
    kind = refused or ("dir" if info.is_dir() else "file")
    return _Entry(info.filename, kind, info.file_size, lambda: archive.open(info))


def _tar_entry(archive, member):
    if member.issym() or member.islnk():
        kind = "is a link"
    elif member.ischr() or member.isblk():
        kind = "is a device"
    elif member.isdir() or member.isfile():
        kind = "dir" if member.isdir() else "file"
    else:
        kind = "is not a regular file or folder"
    return _Entry(member.name, kind, member.size, lambda: archive.extractfile(member))


def _refused_mode(mode):
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device"
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "is not a regular file or folder"
    return None


def _safe_relative(raw):
    """(normalised relative path, None) or (None, why the entry would land outside the extraction folder)."""
    name = raw.replace("\\", "/")  # archives made on Windows may use backslashes
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None, "is an absolute path"
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../"):
        return None, "leads outside the target folder with '..'"
    return norm, None


def _plan(label, entries):
    """Validate every entry before anything is written: [(relative path, entry)]."""
    plan = []
    for entry in entries:
        relative, reason = _safe_relative(entry.raw)
        reason = reason or (None if entry.kind in ("file", "dir") else entry.kind)
        if reason:
            raise S2Error(f"The archive {label} was not extracted because its entry '{entry.raw}' {reason}.")
        if relative != ".":
            plan.append((relative, entry))
    if not plan:
        raise S2Error(f"The archive {label} is empty.")
    return plan


def _top_folder(plan, label):
    """(name of the folder the archive lands in, whether entries already start with it)."""
    firsts = {relative.split("/")[0] for relative, _ in plan}
    top = firsts.pop() if len(firsts) == 1 else None
    if top and all(relative != top or entry.kind == "dir" for relative, entry in plan):
        return top, True
    # Loose files: give them a folder named after the archive rather than scattering them in the target.
    return re.sub(r"(\.zip|\.tar\.gz|\.tgz|\.tar)$", "", label, flags=re.IGNORECASE), False


def _check_size(label, total, compressed, folder):
    if total > BOMB_MIN_BYTES and total > MAX_RATIO * max(compressed, 1):
        raise S2Error(f"The archive {label} was not extracted because it would expand from {_size(compressed)} to "
                      f"{_size(total)}, more than {MAX_RATIO} times, which no Sentinel-2 product does.")
    free = shutil.disk_usage(folder).free
    if total + FREE_SPACE_MARGIN > free:
        raise S2Error(f"The archive {label} needs {_size(total)} but only {_size(free)} are free in {folder}.")


def _write_all(plan, temp, strip, total, progress, is_cancelled, label):
    done = 0
    for relative, entry in plan:
        check_cancelled(is_cancelled)
        parts = relative.split("/")[1:] if strip else relative.split("/")
        destination = os.path.join(temp, *parts)
        if entry.kind == "dir":
            os.makedirs(destination, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        done = _copy_entry(entry, destination, done, total, progress, is_cancelled, label)


def _copy_entry(entry, destination, done, total, progress, is_cancelled, label):
    # zipfile and tarfile stop at the size the header declares, so the size checks above hold.
    with entry.open() as source, open(destination, "wb") as target:
        for block in iter(lambda: source.read(CHUNK), b""):
            target.write(block)
            done += len(block)
            progress(done / total if total else 1.0, f"Extracting {label}")
            check_cancelled(is_cancelled)  # band files are ~100 MB: cancel within a file, not only between
    return done


def _make_folder(folder):
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise S2Error(f"The folder {folder} cannot be created: {error.strerror}.") from error


def _size(count):
    for unit in ("bytes", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return ""


# ---------------------------------------------------------------------------------------------------------------
# Inspection and checks
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Granule:
    name: str
    path: str
    mtd_tl: str = None  # MTD_TL.xml (or the pre-2016 long name), None when missing
    img_data: str = None
    band_files: dict = dataclasses.field(default_factory=dict)  # "B04" (L1C) or "B04_10m" (L2A) -> path
    aux_files: list = dataclasses.field(default_factory=list)  # GRANULE/<g>/AUX_DATA content (AUX_ECMWFT, ...)


@dataclasses.dataclass
class Datastrip:
    name: str
    path: str
    mtd_ds: str = None


@dataclasses.dataclass
class SafeInfo:
    """What is on disk for one .SAFE product; missing parts are None or empty, :func:`check` words them."""

    path: str
    name: str
    level: str = None  # "L1C" / "L2A", from the name, else from the metadata
    platform: str = None
    tile: str = None  # "34UDD"
    sensing_time: dt.datetime = None
    relative_orbit: int = None
    baseline: str = None  # "05.09", from the name's _N0509_
    generation_time: str = None  # the name's last field (for Sen2Cor output: its processing time)
    manifest: str = None
    product_mtd: str = None
    mtd_level: str = None
    mtd_baseline: str = None  # PROCESSING_BASELINE in the product metadata
    mtd_product_uri: str = None
    mtd_error: str = None
    granule_folder: str = None
    granules: list = dataclasses.field(default_factory=list)
    datastrip_folder: str = None
    datastrips: list = dataclasses.field(default_factory=list)

    @property
    def granule(self):
        """The first granule (compact products have exactly one), or None."""
        return self.granules[0] if self.granules else None

    @property
    def mtd_tl(self):
        return self.granule.mtd_tl if self.granule else None

    @property
    def band_files(self):
        return self.granule.band_files if self.granule else {}


def inspect(path):
    """A :class:`SafeInfo` for the .SAFE folder ``path``; raises S2Error only when it is not a folder."""
    if not os.path.isdir(path):
        raise S2Error(f"{path} is not a .SAFE product folder.")
    path = os.path.normpath(path)
    info = SafeInfo(path=path, name=os.path.basename(path))
    _read_name(info)
    info.manifest = _existing(path, "manifest.safe")
    _read_product_mtd(info)
    info.level = info.level or info.mtd_level
    info.granule_folder = _existing(path, "GRANULE", folder=True)
    info.granules = [_granule(os.path.join(path, "GRANULE", g)) for g in _subfolders(info.granule_folder)]
    info.datastrip_folder = _existing(path, "DATASTRIP", folder=True)
    info.datastrips = [_datastrip(os.path.join(path, "DATASTRIP", d)) for d in _subfolders(info.datastrip_folder)]
    return info


def name_baseline(name):
    """The processing baseline a product name states ('05.09' from _N0509_), None when it states none."""
    match = _BASELINE.search(name or "")
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _read_name(info):
    parsed = parse_product_name(info.name)
    info.level = _name_level(info.name)
    info.platform = info.name[:3] if info.level else None
    if parsed:
        info.tile, info.sensing_time = parsed["tile_id"], parsed["sensing_start"]
        info.relative_orbit = parsed["relative_orbit"]
        info.baseline = name_baseline(info.name)
        info.generation_time = _generation(info.name)
    elif _OLD_NAME.match(info.name):
        orbit, sensing = _OLD_NAME.match(info.name).groups()
        info.relative_orbit = int(orbit)
        info.sensing_time = dt.datetime.strptime(sensing, "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc)


def _read_product_mtd(info):
    candidates = [PRODUCT_MTD["L1C"], PRODUCT_MTD["L2A"], *OLD_PRODUCT_MTD.values()]
    found = next((f for pattern in candidates for f in _matching_files(info.path, pattern)), None)
    if not found:
        return
    info.product_mtd = found
    try:
        values = _xml_values(found, ("PROCESSING_LEVEL", "PROCESSING_BASELINE", "PRODUCT_URI"))
    except (ET.ParseError, OSError) as error:
        info.mtd_error = str(error)
        return
    level = values.get("PROCESSING_LEVEL", "")
    info.mtd_level = "L2A" if level.startswith("Level-2A") else "L1C" if level.startswith("Level-1C") else None
    info.mtd_baseline = values.get("PROCESSING_BASELINE")
    info.mtd_product_uri = values.get("PRODUCT_URI")


def _xml_values(path, tags):
    """Text of the first element with each local tag name (namespaces differ between PSD versions)."""
    values = {}
    for element in ET.parse(path).iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag in tags and tag not in values:
            values[tag] = (element.text or "").strip()
    return values


def _granule(path):
    granule = Granule(name=os.path.basename(path), path=path)
    granule.mtd_tl = _existing(path, "MTD_TL.xml") or next(iter(_matching_files(path, "S2?_OPER_MTD_L1C_TL_*.xml")),
                                                          None)
    granule.img_data = _existing(path, "IMG_DATA", folder=True)
    granule.band_files = _band_files(granule.img_data)
    aux = os.path.join(path, "AUX_DATA")
    granule.aux_files = sorted(os.path.join(aux, f) for f in os.listdir(aux)) if os.path.isdir(aux) else []
    return granule


def _band_files(img_data):
    """Band images in IMG_DATA (L1C) or IMG_DATA/R10m|R20m|R60m (L2A), keyed B04 or B04_10m."""
    if not img_data:
        return {}
    folders = [img_data] + [os.path.join(img_data, d) for d in _subfolders(img_data)]
    bands = {}
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            match = _BAND_FILE.search(name)
            if match and os.path.isfile(os.path.join(folder, name)):
                key = match.group(1).upper() + (f"_{match.group(2)}m" if match.group(2) else "")
                bands.setdefault(key, os.path.join(folder, name))
    return bands


def _datastrip(path):
    mtd = _existing(path, "MTD_DS.xml") or next(iter(_matching_files(path, "S2?_OPER_MTD_*.xml")), None)
    return Datastrip(name=os.path.basename(path), path=path, mtd_ds=mtd)


def check(path, level=None):
    """Sentences describing what makes ``path`` unusable as a product (of ``level`` "L1C"/"L2A" when given);
    an empty list when nothing is wrong. The empty folders :func:`repair` creates are not reported."""
    if level not in (None, "L1C", "L2A"):
        raise ValueError(f"level must be None, 'L1C' or 'L2A', not {level!r}")
    name = os.path.basename(os.path.normpath(path))
    if not os.path.isdir(path) or not name.endswith(".SAFE"):
        return [f"{path} is not a .SAFE product folder."]
    info = inspect(path)
    return (_level_problems(info, level) + _metadata_problems(info) + _granule_problems(info)
            + _datastrip_problems(info))


def _level_problems(info, level):
    problems = []
    name_level = _name_level(info.name)
    if name_level and info.mtd_level and name_level != info.mtd_level:
        problems.append(f"{info.name} is named as a {LEVEL_WORDS[name_level]} product but its metadata says "
                        f"{LEVEL_WORDS[info.mtd_level]}.")
    if level and not info.level:
        problems.append(f"{info.name} cannot be recognised as a {LEVEL_WORDS[level]} product from its name or "
                        f"its metadata.")
    elif level and info.level != level:
        problems.append(f"{info.name} is a {LEVEL_WORDS[info.level]} product, but {LEVEL_WORDS[level]} is required.")
    elif level == "L1C" and not any(fnmatch.fnmatchcase(info.name, mask) for mask in SEN2COR_L1C_NAMES):
        problems.append(f"{info.name} is not named like an ESA Level-1C product (S2x_MSIL1C_...SAFE), which "
                        f"Sen2Cor requires.")
    return problems


def _metadata_problems(info):
    problems = []
    if not info.manifest:
        problems.append(f"{info.name} has no manifest.safe.")
    if not info.product_mtd:
        expected = PRODUCT_MTD.get(info.level) or "MTD_MSIL1C.xml or MTD_MSIL2A.xml"
        problems.append(f"{info.name} has no product metadata ({expected}).")
    elif info.mtd_error:
        problems.append(f"{info.name}: {os.path.basename(info.product_mtd)} cannot be read ({info.mtd_error}).")
    return problems


def _granule_problems(info):
    if not info.granule_folder:
        return [f"{info.name} has no GRANULE folder."]
    if not info.granules:
        return [f"{info.name} has no granule in its GRANULE folder."]
    problems = []
    for granule in info.granules:
        where = f"GRANULE/{granule.name}"
        if not granule.mtd_tl:
            problems.append(f"{info.name} has no tile metadata (MTD_TL.xml) in {where}.")
        if not granule.img_data:
            problems.append(f"{info.name} has no IMG_DATA folder in {where}.")
        elif not granule.band_files:
            problems.append(f"{info.name} has no band images in {where}/IMG_DATA.")
    return problems


def _datastrip_problems(info):
    # Sen2Cor stops with "No metadata in datastrip." without these; only a new download brings them back.
    if not info.datastrip_folder:
        return [f"{info.name} has no DATASTRIP folder."]
    if not info.datastrips:
        return [f"{info.name} has no datastrip in its DATASTRIP folder."]
    return [f"{info.name} has no datastrip metadata (MTD_DS.xml) in DATASTRIP/{d.name}."
            for d in info.datastrips if not d.mtd_ds]


def is_l1c(path):
    """True when ``path`` (a .SAFE folder or a product zip) is a Level-1C product, by name or metadata."""
    return _level_of(path) == "L1C"


# ---------------------------------------------------------------------------------------------------------------
# Repair
# ---------------------------------------------------------------------------------------------------------------

def missing_folders(path):
    """The empty folders Sen2Cor needs that ``path`` lacks, relative with '/' (what :func:`repair` would create)."""
    wanted = list(PRODUCT_FOLDERS)
    for granule in _subfolders(os.path.join(path, "GRANULE")):
        wanted += [f"GRANULE/{granule}/{sub}" for sub in GRANULE_FOLDERS]
    for datastrip in _subfolders(os.path.join(path, "DATASTRIP")):
        wanted += [f"DATASTRIP/{datastrip}/{sub}" for sub in DATASTRIP_FOLDERS]
    return [relative for relative in wanted if not os.path.isdir(os.path.join(path, *relative.split("/")))]


def repair(path):
    """Create the empty folders Sen2Cor copies and fails without (see the module docstring); return what was
    created, relative with '/'. Idempotent: a second call returns []. Data that is missing stays missing."""
    if not os.path.isdir(path) or not os.path.basename(os.path.normpath(path)).endswith(".SAFE"):
        raise S2Error(f"{path} is not a .SAFE product folder, so it cannot be repaired.")
    created = missing_folders(path)
    for relative in created:
        try:
            os.makedirs(os.path.join(path, *relative.split("/")), exist_ok=True)
        except OSError as error:
            raise S2Error(f"The folder {relative} cannot be created in {path}: {error.strerror}.") from error
    return created


# ---------------------------------------------------------------------------------------------------------------
# Finding products
# ---------------------------------------------------------------------------------------------------------------

def find_products(folder, pattern=None, level=None):
    """.SAFE folders and product zips directly in ``folder`` or one folder down, sorted by name.

    ``pattern`` is a glob on the name, with or without its .SAFE/.zip suffix (``*T32ULB*``, one product name for
    one HPC array task). ``level`` keeps "L1C" or "L2A" products. When a product exists both extracted and as a
    zip, the folder is returned.
    """
    if not os.path.isdir(folder):
        raise S2Error(f"The folder {folder} does not exist.")
    best = {}
    for depth, path in _candidates(folder):
        name = os.path.basename(path)
        stem = _PRODUCT_SUFFIX.sub("", name)
        if pattern and not (fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(stem, pattern)):
            continue
        if level and _level_of(path) != level:
            continue
        rank = (not os.path.isdir(path), depth)  # extracted beats zip, shallow beats deep
        if stem not in best or rank < best[stem][0]:
            best[stem] = (rank, path)
    return sorted((path for _, path in best.values()), key=lambda p: (os.path.basename(p), p))


def _candidates(folder, depth=0):
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):  # our .extracting folders, hidden files
            continue
        if entry.is_dir() and entry.name.endswith(".SAFE"):
            yield depth, entry.path
        elif entry.is_file() and entry.name.lower().endswith(".zip") and _name_level(entry.name):
            yield depth, entry.path
        elif entry.is_dir() and depth == 0:
            yield from _candidates(entry.path, depth + 1)


def find_l2a_for(l1c_name, folder, require_valid=True):
    """The L2A .SAFE folder in ``folder`` (or one down) from the same datatake and tile as ``l1c_name`` (same
    platform, sensing time, relative orbit and tile; any baseline and generation time), newest generation first;
    None when there is none. With ``require_valid`` only products whose metadata and band images are there count
    (not the manifest: Sen2Cor copies it only when the L1C had one)."""
    wanted = _datatake_key(l1c_name)
    if wanted is None:
        raise S2Error(f"{os.path.basename(l1c_name)} is not a Sentinel-2 product name.")
    if not os.path.isdir(folder):
        return None
    matches = [path for path in find_products(folder, level="L2A")
               if os.path.isdir(path) and _datatake_key(path) == wanted and (not require_valid or _usable_l2a(path))]
    return max(matches, key=lambda p: _generation(os.path.basename(p)) or "", default=None)


def _usable_l2a(path):
    info = inspect(path)
    return (info.mtd_level == "L2A" and not info.mtd_error and bool(info.granules)
            and all(g.mtd_tl and g.band_files for g in info.granules))


def _datatake_key(name):
    parsed = parse_product_name(os.path.basename(os.path.normpath(name)))
    if not parsed:
        return None
    return parsed["platform"], parsed["sensing_start"], parsed["relative_orbit"], parsed["tile_id"]


# ---------------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------------

def _name_level(name):
    match = _NAME_LEVEL.match(name)
    return match.group(1) if match else None


def _level_of(path):
    """Level from the name, else (for a folder) from which product metadata file it holds."""
    name = os.path.basename(os.path.normpath(path))
    level = _name_level(name)
    if level or not os.path.isdir(path):
        return level
    for candidate in ("L1C", "L2A"):
        if os.path.isfile(os.path.join(path, PRODUCT_MTD[candidate])) or _matching_files(
                path, OLD_PRODUCT_MTD[candidate]):
            return candidate
    return None


def _generation(name):
    match = _GENERATION.search(name)
    return match.group(1) if match else None


def _existing(parent, name, folder=False):
    """``parent/name`` when it exists as a file (or a folder with ``folder=True``), else None."""
    path = os.path.join(parent, name)
    return path if (os.path.isdir(path) if folder else os.path.isfile(path)) else None


def _subfolders(folder):
    if not folder or not os.path.isdir(folder):
        return []
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _matching_files(folder, pattern):
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder))
            if fnmatch.fnmatchcase(n, pattern) and os.path.isfile(os.path.join(folder, n))]
