"""Engine tests of .SAFE products on disk: safe extraction, inspection, checks, repair, finding products (no QGIS).

The synthetic products carry the real ESA metadata from ../shared/fixtures/s2_metadata (copied in at test time).
The tile metadata fixture comes from another product (T23LLF); nothing here cross-checks tiles, so it serves as
the MTD_TL.xml of the T34UDD product.
"""

import os
import re
import shutil
import stat
import struct
import tarfile
import zipfile
from collections import namedtuple

import pytest
from conftest import FIXTURES

from sentinel2_pipeline.plugin.engine import safe
from sentinel2_pipeline.plugin.engine.errors import Cancelled, S2Error

METADATA = os.path.join(FIXTURES, "s2_metadata")
MTD_MSIL1C = os.path.join(METADATA, "MTD_MSIL1C_vhgauto-turb.xml")
MTD_TL = os.path.join(METADATA, "MTD_TL_L1C_T23LLF_marujore-sensor-harmonization.xml")

L1C = "S2B_MSIL1C_20230601T094549_N0509_R079_T34UDD_20230601T115221.SAFE"  # PRODUCT_URI of the fixture
GRANULE = "L1C_T34UDD_A032566_20230601T094549"
DATASTRIP = "DS_2BPS_20230601T115221_S20230601T094549"
L2A = "S2B_MSIL2A_20230601T094549_N9999_R079_T34UDD_20240105T101010.SAFE"  # what Sen2Cor would write
L2A_GRANULE = "L2A_T34UDD_A032566_20230601T094549"
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


# ---------------------------------------------------------------------------------------------------------------
# Synthetic products in the real layout
# ---------------------------------------------------------------------------------------------------------------

def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


def _jp2():
    return JP2_SIGNATURE + os.urandom(3000)  # random: compresses like real JPEG 2000 (not at all)


def _image_files():
    """The IMAGE_FILE entries of the real MTD_MSIL1C.xml (GRANULE/<g>/IMG_DATA/T34UDD_..._B01, ...)."""
    with open(MTD_MSIL1C, encoding="utf-8") as f:
        return re.findall(r"<IMAGE_FILE>([^<]+)</IMAGE_FILE>", f.read())


def make_l1c(folder, name=L1C, origin=None):
    """An L1C product as ESA distributes it: metadata, datastrip, one granule with every band. ``origin``
    (epsg, x, y): the granule's geocoding moved there (the real tile metadata is of T23LLF), so that the small
    images a stand-in writes lie where a test's area is."""
    root = os.path.join(folder, name)
    _write(os.path.join(root, "manifest.safe"), '<?xml version="1.0"?><xfdu:XFDU xmlns:xfdu="urn:ccsds:'
                                                 'schema:xfdu:1" version="esa/safe/sentinel/1.1/sentinel-2/msi/'
                                                 'archive_l1c_user_product"/>')
    shutil.copy(MTD_MSIL1C, os.path.join(root, "MTD_MSIL1C.xml"))
    _write(os.path.join(root, "INSPIRE.xml"), '<?xml version="1.0"?><gmd:MD_Metadata/>')
    _write(os.path.join(root, "HTML", "UserProduct_index.html"), "<html></html>")
    _write(os.path.join(root, "rep_info", "S2_User_Product_Level-1C_Metadata.xsd"), "<xs:schema/>")
    os.makedirs(os.path.join(root, "AUX_DATA"))
    _write(os.path.join(root, "DATASTRIP", DATASTRIP, "MTD_DS.xml"), '<?xml version="1.0"?><n1:Level-1C_DataStrip_ID'
                                                                   ' xmlns:n1="https://psd-14.sentinel2.eo.esa.int/'
                                                                   'PSD/S2_PDI_Level-1C_Datastrip_Metadata.xsd"/>')
    os.makedirs(os.path.join(root, "DATASTRIP", DATASTRIP, "QI_DATA"))
    granule = os.path.join(root, "GRANULE", GRANULE)
    shutil.copy(MTD_TL, _mkdirs(granule, "MTD_TL.xml"))
    if origin:
        with open(MTD_TL, encoding="utf-8") as handle:
            text = handle.read().replace("EPSG:32723", f"EPSG:{origin[0]}")
        text = re.sub(r"<ULX>[^<]*</ULX>", f"<ULX>{origin[1]:.0f}</ULX>", text)
        text = re.sub(r"<ULY>[^<]*</ULY>", f"<ULY>{origin[2]:.0f}</ULY>", text)
        _write(os.path.join(granule, "MTD_TL.xml"), text)
    for image in _image_files():
        _write(os.path.join(root, image + ".jp2"), _jp2())
    _write(os.path.join(granule, "AUX_DATA", "AUX_ECMWFT"), os.urandom(500))
    _write(os.path.join(granule, "QI_DATA", "MSK_CLASSI_B00.jp2"), _jp2())
    return root


def make_l2a(folder, name=L2A, granule=L2A_GRANULE):
    """An L2A product in the layout Sen2Cor writes: MTD_MSIL2A.xml and IMG_DATA/R10m, R20m, R60m."""
    root = os.path.join(folder, name)
    with open(MTD_MSIL1C, encoding="utf-8") as f:
        mtd = f.read().replace("Level-1C", "Level-2A").replace("S2MSI1C", "S2MSI2A").replace(L1C, name)
    _write(os.path.join(root, "MTD_MSIL2A.xml"), mtd)
    _write(os.path.join(root, "manifest.safe"), "<xfdu:XFDU/>")
    _write(os.path.join(root, "DATASTRIP", DATASTRIP, "MTD_DS.xml"), "<n1:Level-2A_DataStrip_ID/>")
    shutil.copy(MTD_TL, _mkdirs(root, "GRANULE", granule, "MTD_TL.xml"))
    img = os.path.join(root, "GRANULE", granule, "IMG_DATA")
    for resolution, bands in (("10", ("B02", "B03", "B04", "B08", "TCI")), ("20", ("B05", "SCL"))):
        for band in bands:
            _write(os.path.join(img, f"R{resolution}m", f"T34UDD_20230601T094549_{band}_{resolution}m.jp2"), _jp2())
    return root


def _mkdirs(*parts):
    path = os.path.join(*parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def zip_folder(folder, zip_path):
    """Zip a product the way the Data Space does: the .SAFE folder at the top, with folder entries."""
    parent = os.path.dirname(folder)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for current, _dirs, files in os.walk(folder):
            archive.write(current, os.path.relpath(current, parent) + "/")
            for name in files:
                path = os.path.join(current, name)
                archive.write(path, os.path.relpath(path, parent))
    return zip_path


def tree(folder):
    """{relative path: bytes or None for folders} of everything under folder."""
    result = {}
    for current, dirs, files in os.walk(folder):
        for name in dirs:
            result[os.path.relpath(os.path.join(current, name), folder)] = None
        for name in files:
            with open(os.path.join(current, name), "rb") as f:
                result[os.path.relpath(os.path.join(current, name), folder)] = f.read()
    return result


@pytest.fixture
def product(tmp_path):
    return make_l1c(str(tmp_path / "products"))


@pytest.fixture
def product_zip(tmp_path, product):
    return zip_folder(product, str(tmp_path / (L1C + ".zip")))


# ---------------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------------

def test_extraction_lands_the_whole_product_under_its_name_only_when_complete(tmp_path, product, product_zip):
    target = str(tmp_path / "out")
    final, temp = os.path.join(target, L1C), os.path.join(target, f".{L1C}.extracting")
    seen = []

    def progress(fraction, message):
        seen.append((fraction, os.path.exists(final), os.path.isdir(temp)))

    path = safe.extract_zip(product_zip, target, progress=progress)

    assert path == final
    assert tree(path) == tree(product)
    assert safe.check(path, level="L1C") == []
    assert os.listdir(target) == [L1C]  # no temporary folder left
    during = seen[:-1]
    assert during and all(not final_exists and temp_exists for _, final_exists, temp_exists in during)
    fractions = [fraction for fraction, _, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def _zip_with(tmp_path, evil_name, evil_info=None):
    """A zip with good product entries first and one bad entry after them."""
    path = str(tmp_path / "evil.zip")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{L1C}/manifest.safe", "<xfdu:XFDU/>")
        archive.writestr(f"{L1C}/GRANULE/{GRANULE}/MTD_TL.xml", "<tile/>")
        archive.writestr(evil_info or evil_name, b"owned")
    return path


@pytest.mark.parametrize("entry, reason", [
    ("../evil", "leads outside the target folder with '..'"),
    (f"{L1C}/../../evil", "leads outside the target folder with '..'"),
    ("..\\evil", "leads outside the target folder with '..'"),
    ("ABSOLUTE", "is an absolute path"),
    ("C:\\evil", "is an absolute path"),
])
def test_entries_escaping_the_target_are_refused_before_anything_is_written(tmp_path, entry, reason):
    absolute = str(tmp_path / "abs_evil")
    entry = absolute if entry == "ABSOLUTE" else entry
    target = tmp_path / "inner" / "out"
    path = _zip_with(tmp_path, entry)

    with pytest.raises(S2Error) as raised:
        safe.extract_zip(path, str(target))

    assert str(raised.value) == f"The archive evil.zip was not extracted because its entry '{entry}' {reason}."
    assert os.listdir(target) == []
    assert not os.path.exists(tmp_path / "evil") and not os.path.exists(tmp_path / "inner" / "evil")
    assert not os.path.exists(absolute)


@pytest.mark.parametrize("mode, reason", [
    (stat.S_IFLNK | 0o777, "is a symbolic link"),
    (stat.S_IFCHR | 0o600, "is a device"),
    (stat.S_IFBLK | 0o600, "is a device"),
    (stat.S_IFIFO | 0o600, "is not a regular file or folder"),
])
def test_links_and_devices_are_refused(tmp_path, mode, reason):
    info = zipfile.ZipInfo(f"{L1C}/GRANULE/{GRANULE}/IMG_DATA/link")
    info.create_system = 3  # Unix: how zip -y stores a link (its target path as the content)
    info.external_attr = mode << 16
    path = _zip_with(tmp_path, None, evil_info=info)
    target = tmp_path / "out"

    with pytest.raises(S2Error, match=re.escape(f"entry '{info.filename}' {reason}.")):
        safe.extract_zip(path, str(target))
    assert os.listdir(target) == []


def test_zip_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(safe, "BOMB_MIN_BYTES", 10_000_000)  # same rule, a bomb small enough for a test
    path = str(tmp_path / "bomb.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{L1C}/GRANULE/{GRANULE}/IMG_DATA/zeros.jp2", bytes(20_000_000))
    target = tmp_path / "out"

    with pytest.raises(S2Error, match=r"^The archive bomb\.zip was not extracted because it would expand from "
                                      r"[\d.]+ kB to 20\.0 MB, more than 200 times"):
        safe.extract_zip(path, str(target))
    assert os.listdir(target) == []


def test_highly_compressible_small_archive_is_not_a_bomb(tmp_path):
    path = str(tmp_path / "sparse.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{L1C}/AUX_DATA/zeros", bytes(5_000_000))  # ratio ~1000, far below 1 GB
    assert os.path.getsize(os.path.join(safe.extract_zip(path, str(tmp_path)), "AUX_DATA", "zeros")) == 5_000_000


def test_header_understating_the_size_is_caught(tmp_path, product_zip):
    with open(product_zip, "rb") as f:
        data = bytearray(f.read())
    # Claim 10 bytes for the first file in both headers: the reader stops there and the CRC fails.
    central = data.find(b"PK\x01\x02")
    while struct.unpack_from("<I", data, central + 20)[0] == 0:  # skip folder entries (no content)
        central = data.find(b"PK\x01\x02", central + 4)
    local = struct.unpack_from("<I", data, central + 42)[0]
    struct.pack_into("<I", data, central + 24, 10)
    struct.pack_into("<I", data, local + 22, 10)
    lying = tmp_path / "lying.zip"
    lying.write_bytes(bytes(data))
    target = tmp_path / "out"

    with pytest.raises(S2Error, match=r"^The archive lying\.zip could not be extracted: Bad CRC-32"):
        safe.extract_zip(str(lying), str(target))
    assert os.listdir(target) == []


def test_not_enough_free_space_is_refused(tmp_path, product_zip, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(safe.shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 1000, 1000))
    target = tmp_path / "out"

    with pytest.raises(S2Error, match=rf"^The archive {re.escape(L1C)}\.zip needs [\d.]+ kB but only 1\.0 kB "
                                      rf"are free in {re.escape(str(target))}\.$"):
        safe.extract_zip(product_zip, str(target))
    assert os.listdir(target) == []


def test_cancel_leaves_no_partial_folder(tmp_path, product_zip):
    calls = []

    def is_cancelled():
        calls.append(1)
        return len(calls) > 5

    target = tmp_path / "out"
    with pytest.raises(Cancelled):
        safe.extract_zip(product_zip, str(target), is_cancelled=is_cancelled)
    assert os.listdir(target) == []


def test_leftover_of_an_interrupted_run_is_replaced(tmp_path, product, product_zip):
    target = tmp_path / "out"
    stale = target / f".{L1C}.extracting"
    _write(str(stale / "GRANULE" / "half.jp2"), b"half")

    path = safe.extract_zip(product_zip, str(target))

    assert tree(path) == tree(product)
    assert os.listdir(target) == [L1C]


def test_existing_product_is_kept_unless_replace(tmp_path, product_zip):
    target = tmp_path / "out"
    marker = target / L1C / "kept"
    _write(str(marker), "x")

    assert safe.extract_zip(product_zip, str(target)) == str(target / L1C)
    assert marker.exists()
    assert safe.extract_zip(product_zip, str(target), replace=True) == str(target / L1C)
    assert not marker.exists() and safe.check(str(target / L1C)) == []
    assert os.listdir(target) == [L1C]


def test_loose_files_get_a_folder_named_after_the_archive(tmp_path):
    path = str(tmp_path / "bands.zip")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("B04.tif", b"4")
        archive.writestr("sub/B08.tif", b"8")
    folder = safe.extract_zip(path, str(tmp_path / "out"))
    assert folder == str(tmp_path / "out" / "bands")
    assert tree(folder) == {"B04.tif": b"4", "sub": None, os.path.join("sub", "B08.tif"): b"8"}


def test_tar_gz_is_extracted_and_its_links_refused(tmp_path, product):
    good = str(tmp_path / "product.tar.gz")
    with tarfile.open(good, "w:gz") as archive:
        archive.add(product, arcname=L1C)
    assert tree(safe.extract_zip(good, str(tmp_path / "out"))) == tree(product)

    bad = str(tmp_path / "link.tar.gz")
    with tarfile.open(bad, "w:gz") as archive:
        link = tarfile.TarInfo(f"{L1C}/AUX_DATA/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    with pytest.raises(S2Error, match=re.escape(f"entry '{L1C}/AUX_DATA/passwd' is a link.")):
        safe.extract_zip(bad, str(tmp_path / "out2"))
    assert os.listdir(tmp_path / "out2") == []


@pytest.mark.parametrize("content, message", [
    (b"not an archive at all", "The file junk.zip is not a zip or tar archive, or it is damaged."),
    (None, "does not exist."),
])
def test_unusable_archive_is_one_sentence(tmp_path, content, message):
    path = tmp_path / "junk.zip"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(S2Error) as raised:
        safe.extract_zip(str(path), str(tmp_path / "out"))
    assert str(raised.value).endswith(message) and "\n" not in str(raised.value)


def test_empty_zip_is_refused(tmp_path):
    path = str(tmp_path / "empty.zip")
    zipfile.ZipFile(path, "w").close()
    with pytest.raises(S2Error, match=r"^The archive empty\.zip is empty\.$"):
        safe.extract_zip(path, str(tmp_path / "out"))


# ---------------------------------------------------------------------------------------------------------------
# Inspection and checks
# ---------------------------------------------------------------------------------------------------------------

def test_inspect_reads_name_and_real_metadata(product):
    info = safe.inspect(product)

    assert (info.name, info.level, info.platform, info.tile, info.relative_orbit) == (L1C, "L1C", "S2B", "34UDD", 79)
    assert info.sensing_time.isoformat() == "2023-06-01T09:45:49+00:00"
    assert (info.baseline, info.mtd_baseline, info.mtd_level) == ("05.09", "05.09", "L1C")
    assert info.generation_time == "20230601T115221"
    assert info.mtd_product_uri == L1C
    assert info.manifest == os.path.join(product, "manifest.safe")
    assert info.product_mtd == os.path.join(product, "MTD_MSIL1C.xml")
    assert [g.name for g in info.granules] == [GRANULE]
    assert info.mtd_tl == os.path.join(product, "GRANULE", GRANULE, "MTD_TL.xml")
    expected = {image.rsplit("_", 1)[1]: os.path.join(product, image + ".jp2") for image in _image_files()}
    assert len(expected) == 14 and info.band_files == expected
    assert [os.path.basename(f) for f in info.granule.aux_files] == ["AUX_ECMWFT"]
    assert [(d.name, d.mtd_ds) for d in info.datastrips] == [
        (DATASTRIP, os.path.join(product, "DATASTRIP", DATASTRIP, "MTD_DS.xml"))]


def test_inspect_l2a_finds_bands_per_resolution(tmp_path):
    info = safe.inspect(make_l2a(str(tmp_path)))
    assert (info.level, info.mtd_level, info.baseline) == ("L2A", "L2A", "99.99")
    assert set(info.band_files) == {"B02_10m", "B03_10m", "B04_10m", "B08_10m", "TCI_10m", "B05_20m", "SCL_20m"}
    assert info.band_files["SCL_20m"].endswith(os.path.join("R20m", "T34UDD_20230601T094549_SCL_20m.jp2"))


def test_good_products_have_no_problems(tmp_path, product):
    assert safe.check(product) == []
    assert safe.check(product, level="L1C") == []
    assert safe.check(make_l2a(str(tmp_path)), level="L2A") == []


@pytest.mark.parametrize("remove, sentence", [
    ("manifest.safe", "has no manifest.safe."),
    ("MTD_MSIL1C.xml", "has no product metadata (MTD_MSIL1C.xml)."),
    ("GRANULE", "has no GRANULE folder."),
    (f"GRANULE/{GRANULE}", "has no granule in its GRANULE folder."),
    (f"GRANULE/{GRANULE}/MTD_TL.xml", f"has no tile metadata (MTD_TL.xml) in GRANULE/{GRANULE}."),
    (f"GRANULE/{GRANULE}/IMG_DATA", f"has no IMG_DATA folder in GRANULE/{GRANULE}."),
    (f"GRANULE/{GRANULE}/IMG_DATA/*", f"has no band images in GRANULE/{GRANULE}/IMG_DATA."),
    ("DATASTRIP", "has no DATASTRIP folder."),
    (f"DATASTRIP/{DATASTRIP}", "has no datastrip in its DATASTRIP folder."),
    (f"DATASTRIP/{DATASTRIP}/MTD_DS.xml", f"has no datastrip metadata (MTD_DS.xml) in DATASTRIP/{DATASTRIP}."),
])
def test_each_missing_part_gives_its_sentence(product, remove, sentence):
    target = os.path.join(product, *remove.split("/"))
    if remove.endswith("/*"):  # the folder stays, its content goes
        folder = os.path.dirname(target)
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
    else:
        shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)

    assert safe.check(product) == [f"{L1C} {sentence}"]


def test_unreadable_product_metadata_is_reported(product):
    _write(os.path.join(product, "MTD_MSIL1C.xml"), "<n1:Level-1C_User_Product><unclosed>")
    problems = safe.check(product)
    assert len(problems) == 1 and problems[0].startswith(f"{L1C}: MTD_MSIL1C.xml cannot be read (")


@pytest.mark.parametrize("make", ["file", "folder"])
def test_something_that_is_not_a_safe_folder(tmp_path, make):
    path = tmp_path / ("x.SAFE" if make == "file" else "S2B_MSIL1C_product")
    path.write_text("x") if make == "file" else path.mkdir()
    assert safe.check(str(path)) == [f"{path} is not a .SAFE product folder."]
    with pytest.raises(S2Error, match="cannot be repaired"):
        safe.repair(str(path))


def test_l2a_given_where_l1c_is_required(tmp_path, product):
    l2a = make_l2a(str(tmp_path))
    assert safe.check(l2a, level="L1C") == [f"{L2A} is a Level-2A product, but Level-1C is required."]
    assert safe.check(product, level="L2A") == [f"{L1C} is a Level-1C product, but Level-2A is required."]
    assert not safe.is_l1c(l2a) and safe.is_l1c(product)
    assert safe.is_l1c(str(tmp_path / (L1C + ".zip"))) and not safe.is_l1c(str(tmp_path / "other.zip"))


def test_renamed_l1c_is_recognised_but_sen2cor_needs_the_esa_name(tmp_path):
    path = make_l1c(str(tmp_path), name="my_scene.SAFE")
    assert safe.is_l1c(path) and safe.inspect(path).level == "L1C"
    assert safe.check(path) == []
    assert safe.check(path, level="L1C") == [
        "my_scene.SAFE is not named like an ESA Level-1C product (S2x_MSIL1C_...SAFE), which Sen2Cor requires."]


def test_name_and_metadata_disagreeing(tmp_path):
    wrong = L1C.replace("MSIL1C", "MSIL2A")
    path = make_l1c(str(tmp_path), name=wrong)
    assert safe.check(path) == [f"{wrong} is named as a Level-2A product but its metadata says Level-1C."]


# ---------------------------------------------------------------------------------------------------------------
# Repair
# ---------------------------------------------------------------------------------------------------------------

BUCKET_LOSSES = ["AUX_DATA", "HTML", "rep_info", f"GRANULE/{GRANULE}/AUX_DATA", f"GRANULE/{GRANULE}/QI_DATA",
                 f"DATASTRIP/{DATASTRIP}/QI_DATA"]


def test_repair_creates_exactly_the_missing_empty_folders_and_is_idempotent(product):
    for relative in BUCKET_LOSSES:  # an S3 copy of a product: empty folders do not exist as objects
        shutil.rmtree(os.path.join(product, *relative.split("/")))
    before = tree(product)

    assert safe.missing_folders(product) == BUCKET_LOSSES
    assert safe.repair(product) == BUCKET_LOSSES

    after = tree(product)
    assert {k: v for k, v in after.items() if k not in before} == {os.path.join(*r.split("/")): None
                                                                   for r in BUCKET_LOSSES}
    assert {k: after[k] for k in before} == before  # nothing else touched
    assert safe.repair(product) == []
    assert safe.check(product, level="L1C") == []


def test_repair_of_a_complete_product_creates_nothing(product):
    before = tree(product)
    assert safe.repair(product) == []
    assert tree(product) == before


def test_repair_creates_only_what_exists_partly_and_never_data(product):
    for relative in ("DATASTRIP", "HTML", f"GRANULE/{GRANULE}/QI_DATA"):
        shutil.rmtree(os.path.join(product, *relative.split("/")))

    assert safe.repair(product) == ["HTML", f"GRANULE/{GRANULE}/QI_DATA"]
    assert not os.path.exists(os.path.join(product, "DATASTRIP"))
    assert safe.check(product) == [f"{L1C} has no DATASTRIP folder."]


# ---------------------------------------------------------------------------------------------------------------
# Finding products
# ---------------------------------------------------------------------------------------------------------------

OTHER_L1C = "S2A_MSIL1C_20210601T104021_N0300_R008_T32ULB_20210601T125922"
DEEP_L1C = "S2A_MSIL1C_20210604T103021_N0300_R108_T32ULB_20210604T124109"


@pytest.fixture
def library(tmp_path):
    """A download folder: a product both extracted and zipped, zips, an L2A, a month sub-folder, noise."""
    folder = tmp_path / "library"
    make_l1c(str(folder))
    zip_folder(os.path.join(str(folder), L1C), str(folder / (L1C + ".zip")))
    (folder / (OTHER_L1C + ".zip")).write_bytes(b"zip")
    make_l2a(str(folder))
    make_l1c(str(folder / "2021-06"), name=DEEP_L1C + ".SAFE")
    make_l1c(str(folder / "2021-06" / "too-deep"), name="S2A_MSIL1C_20210607T104021_N0300_R008_T32ULB_"
                                                       "20210607T125922.SAFE")
    (folder / "notes.zip").write_bytes(b"zip")
    (folder / f".{L1C}.extracting").mkdir()
    return folder


def test_find_products_prefers_extracted_folders_and_looks_one_level_down(library):
    assert safe.find_products(str(library)) == [  # sorted by name, so job array indices are stable
        str(library / (OTHER_L1C + ".zip")),
        str(library / "2021-06" / (DEEP_L1C + ".SAFE")),
        str(library / L1C),
        str(library / L2A),
    ]


def test_find_products_by_level_and_pattern(library):
    assert safe.find_products(str(library), level="L2A") == [str(library / L2A)]
    assert [os.path.basename(p) for p in safe.find_products(str(library), level="L1C")] == [
        OTHER_L1C + ".zip", DEEP_L1C + ".SAFE", L1C]
    assert safe.find_products(str(library), pattern="*T32ULB*", level="L1C") == [
        str(library / (OTHER_L1C + ".zip")), str(library / "2021-06" / (DEEP_L1C + ".SAFE"))]
    assert safe.find_products(str(library), pattern=OTHER_L1C) == [str(library / (OTHER_L1C + ".zip"))]
    assert safe.find_products(str(library), pattern="*T99XXX*") == []


def test_find_products_in_a_missing_folder(tmp_path):
    with pytest.raises(S2Error, match="does not exist"):
        safe.find_products(str(tmp_path / "nowhere"))


def test_find_l2a_for_matches_across_baseline_and_generation_time(tmp_path):
    out = str(tmp_path / "l2a")
    older = make_l2a(out, name="S2B_MSIL2A_20230601T094549_N0509_R079_T34UDD_20230601T143212.SAFE")
    newer = make_l2a(out, name="S2B_MSIL2A_20230601T094549_N9999_R079_T34UDD_20240105T101010.SAFE")
    for other in ("S2A_MSIL2A_20230601T094549_N9999_R079_T34UDD_20250101T000000.SAFE",  # other platform
                  "S2B_MSIL2A_20230601T094550_N9999_R079_T34UDD_20250101T000000.SAFE",  # other sensing time
                  "S2B_MSIL2A_20230601T094549_N9999_R080_T34UDD_20250101T000000.SAFE",  # other orbit
                  "S2B_MSIL2A_20230601T094549_N9999_R079_T34UDE_20250101T000000.SAFE"):  # other tile
        make_l2a(out, name=other)

    assert safe.find_l2a_for(L1C, out) == newer
    assert safe.find_l2a_for(os.path.join("/data", L1C[:-5] + ".zip"), out) == newer
    os.remove(os.path.join(newer, "manifest.safe"))  # Sen2Cor copies it only when the L1C had one
    assert safe.find_l2a_for(L1C, out) == newer
    shutil.rmtree(os.path.join(newer, "GRANULE", L2A_GRANULE, "IMG_DATA"))  # a run that died half-way
    assert safe.find_l2a_for(L1C, out) == older
    assert safe.find_l2a_for(L1C, out, require_valid=False) == newer
    assert safe.find_l2a_for(L1C.replace("T34UDD", "T33UUU"), out) is None
    assert safe.find_l2a_for(L1C, str(tmp_path / "not-yet")) is None
    with pytest.raises(S2Error, match="is not a Sentinel-2 product name"):
        safe.find_l2a_for("holiday.jpg", out)


def test_module_does_not_import_qgis():
    with open(safe.__file__, encoding="utf-8") as f:
        assert not re.search(r"^\s*(from|import)\s+qgis", f.read(), re.MULTILINE)

