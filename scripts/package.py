"""Build the release zip for plugins.qgis.org: ``dist/sentinel2_pipeline-<version>.zip`` (``make package``).

The zip holds one top folder, ``sentinel2_pipeline/``, with only what QGIS needs at run time (an explicit list
of top-level entries), never tests, benchmarks, scripts, sample data, caches or development files. Files come
from git (tracked and not ignored) when this is a git checkout, otherwise from the folder itself. After writing,
the zip is checked against the rules of the official repository's upload validator; a violation fails the build.

    python3 scripts/package.py [--dist DIR] [--check-only ZIP]
"""

import argparse
import configparser
import fnmatch
import os
import re
import subprocess
import sys
import urllib.parse
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_NAME = "sentinel2_pipeline"
MAX_BYTES = 25_000_000  # plugins.qgis.org: PLUGIN_MAX_UPLOAD_SIZE
# Top-level entries shipped to users (folders are taken whole, minus EXCLUDE).
INCLUDE = [
    "__init__.py",
    "metadata.txt",
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "plugin",
    "processing_provider",
    "ui",
    "models",
    "i18n",
]
REQUIRED = ["__init__.py", "metadata.txt", "LICENSE"]
# Never shipped, wherever they are (patterns match any path component).
EXCLUDE = [
    "__pycache__",
    "*.pyc",
    "*.pyo",
    ".*",  # .git, .gitignore, .DS_Store, editor files, caches
    "__MACOSX",
    "*~",
    "*.orig",
    "*.rej",
    "*.bak",
    "*.swp",
    "tests",
    "test_*.py",
    "conftest.py",
]
METADATA_REQUIRED = [
    "name",
    "description",
    "version",
    "qgisMinimumVersion",
    "author",
    "email",
    "about",
    "tracker",
    "repository",
]


def read_metadata(text):
    """``[general]`` of metadata.txt parsed the way the plugin repository does (interpolation on: a lone
    ``%`` is an error there too)."""
    parser = configparser.ConfigParser()
    parser.optionxform = str
    parser.read_string(text)
    return dict(parser.items("general"))


def plugin_version(root=ROOT):
    with open(os.path.join(root, "metadata.txt"), encoding="utf-8") as handle:
        return read_metadata(handle.read())["version"].strip()


def _excluded(relpath):
    return any(fnmatch.fnmatch(part, pattern) for part in relpath.split("/") for pattern in EXCLUDE)


def _candidate_files(root):
    """Repository-relative paths of files: git's view (tracked plus untracked-not-ignored) or a folder walk."""
    try:
        listed = subprocess.run(
            ["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True,
            capture_output=True,
        ).stdout.decode("utf-8")
        top = subprocess.run(
            ["git", "-C", root, "rev-parse", "--show-toplevel"], check=True, capture_output=True, text=True
        ).stdout.strip()
        if os.path.realpath(top) == os.path.realpath(root):
            return sorted({path for path in listed.split("\0") if path})
    except (OSError, subprocess.CalledProcessError):
        pass
    found = []
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root).replace(os.sep, "/")
        dirs[:] = [name for name in dirs if not _excluded(name)]
        for name in files:
            found.append(name if rel == "." else f"{rel}/{name}")
    return sorted(found)


def package_files(root=ROOT):
    """The repository-relative paths that go into the zip."""
    files = []
    for path in _candidate_files(root):
        top = path.split("/", 1)[0]
        if top not in INCLUDE or _excluded(path):
            continue
        if os.path.isfile(os.path.join(root, path)):  # git lists deleted-but-tracked files too
            files.append(path)
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise SystemExit(f"package: required file(s) missing from the plugin folder: {', '.join(missing)}")
    return files


def with_repository(text, url):
    """metadata.txt with ``repository``, ``homepage`` and ``tracker`` (``<url>/issues``) set from one URL: the
    project's home is one setting (a fork or a mirror sets it when packaging)."""
    url = url.rstrip("/")
    values = {"repository": url, "homepage": url, "tracker": f"{url}/issues"}
    lines = []
    for line in text.splitlines(keepends=True):
        key = line.split("=", 1)[0].strip()
        lines.append(f"{key}={values[key]}\n" if "=" in line and key in values else line)
    return "".join(lines)


def build(root=ROOT, dist=None, repository=None):
    """Write the zip and return its path. Entries are sorted with a fixed timestamp, so builds are repeatable.
    ``repository``: the project's home URL written into the packaged metadata.txt (default: as it is)."""
    dist = os.path.abspath(dist or os.path.join(root, "dist"))
    os.makedirs(dist, exist_ok=True)
    target = os.path.join(dist, f"{PLUGIN_NAME}-{plugin_version(root)}.zip")
    partial = target + ".part"
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        folders = set()
        for path in package_files(root):
            parts = path.split("/")[:-1]
            for depth in range(len(parts) + 1):
                folder = "/".join([PLUGIN_NAME] + parts[:depth]) + "/"
                if folder not in folders:
                    folders.add(folder)
                    info = zipfile.ZipInfo(folder, date_time=(1980, 1, 1, 0, 0, 0))
                    info.external_attr = (0o40755 << 16) | 0x10
                    archive.writestr(info, b"")
            info = zipfile.ZipInfo(f"{PLUGIN_NAME}/{path}", date_time=(1980, 1, 1, 0, 0, 0))
            mode = 0o755 if os.access(os.path.join(root, path), os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(os.path.join(root, path), "rb") as handle:
                data = handle.read()
            if path == "metadata.txt" and repository:
                data = with_repository(data.decode("utf-8"), repository).encode("utf-8")
            archive.writestr(info, data)
    os.replace(partial, target)
    return target


def check(zip_path):
    """Problems the official repository's validator (or a user) would find in the zip; empty when fine."""
    problems = []
    size = os.path.getsize(zip_path)
    if size > MAX_BYTES:
        problems.append(f"zip is {size} bytes, over the {MAX_BYTES} bytes limit")
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        bad = archive.testzip()
        if bad:
            problems.append(f"corrupt entry {bad}")
        tops = {name.split("/", 1)[0] for name in names}
        if tops != {PLUGIN_NAME}:
            problems.append(f"top-level entries {sorted(tops)}, expected only {PLUGIN_NAME}/")
        if not names or "/" not in names[0]:
            problems.append("the first entry is not inside a folder")
        elif not re.match(r"^[a-z_][a-z0-9_]*$", names[0].split("/", 1)[0]):
            problems.append(f"folder name {names[0].split('/', 1)[0]!r} is not a PEP 8 package name")
        for name in names:
            parts = name.rstrip("/").split("/")
            if ".." in name or name.startswith("/"):
                problems.append(f"path information in {name}")
            if ".pyc" in name:
                problems.append(f"compiled Python file {name}")
            if any(part in ("__MACOSX", ".git", "__pycache__") for part in parts):
                problems.append(f"forbidden folder in {name}")
            if len(parts) > 1 and parts[1] in ("tests", "benchmarks", "scripts", "data", "build", "dist", ".venv"):
                problems.append(f"development file {name}")
            if len(parts) > 1 and _excluded("/".join(parts[1:])):
                problems.append(f"excluded file {name}")
        for required in REQUIRED:
            if f"{PLUGIN_NAME}/{required}" not in names:
                problems.append(f"{required} is missing")
        if f"{PLUGIN_NAME}/metadata.txt" in names:
            try:
                metadata = read_metadata(archive.read(f"{PLUGIN_NAME}/metadata.txt").decode("utf-8"))
            except (configparser.Error, UnicodeDecodeError, KeyError) as error:
                problems.append(f"metadata.txt cannot be parsed: {error}")
            else:
                for key in METADATA_REQUIRED:
                    if not metadata.get(key, "").strip():
                        problems.append(f"metadata.txt lacks {key}")
                for key, template in (("tracker", "http://bugs"), ("repository", "http://repo"),
                                      ("homepage", "http://homepage")):
                    url = metadata.get(key, "").strip()
                    parsed = urllib.parse.urlparse(url)
                    if key in metadata and (url == template or not (parsed.scheme and parsed.netloc)):
                        problems.append(f"metadata.txt: {key} is not a valid URL ({url!r})")
                home = metadata.get("repository", "").strip().rstrip("/")
                if (metadata.get("tracker", "").strip(), metadata.get("homepage", "").strip().rstrip("/")) != (
                        f"{home}/issues", home):
                    problems.append("metadata.txt: tracker and homepage are not the repository's (<repository>/issues "
                                    "and <repository>): set all three with --repository")
                for key in ("experimental", "deprecated", "server"):
                    if metadata.get(key, "false").strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                        problems.append(f"metadata.txt: {key} is not a boolean")
                if "/" in metadata.get("author", ""):
                    problems.append("metadata.txt: author contains '/'")
                icon = metadata.get("icon", "").strip()
                if icon and f"{PLUGIN_NAME}/{icon.removeprefix('./')}" not in names:
                    problems.append(f"the icon {icon} named in metadata.txt is not in the zip")
                if metadata.get("hasProcessingProvider", "").strip().lower() not in ("yes", "true"):
                    problems.append("metadata.txt: hasProcessingProvider is not yes (qgis_process would not load it)")
                expected = f"{PLUGIN_NAME}-{metadata.get('version', '').strip()}.zip"
                if os.path.basename(zip_path) != expected:
                    problems.append(f"zip named {os.path.basename(zip_path)}, expected {expected}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", help="output folder (default: dist/)")
    parser.add_argument("--check-only", metavar="ZIP", help="only check an existing zip")
    parser.add_argument("--repository", help="the project's home URL for repository, homepage and tracker "
                                             "(default: metadata.txt's)")
    args = parser.parse_args(argv)
    path = args.check_only or build(ROOT, args.dist, args.repository)
    problems = check(path)
    if problems:
        print(f"{path}: NOT accepted by plugins.qgis.org:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(path) as archive:
        count = sum(1 for name in archive.namelist() if not name.endswith("/"))
    print(f"{path} ({os.path.getsize(path) / 1024:.0f} KiB, {count} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
