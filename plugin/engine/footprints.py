"""Search results: one footprint schema for every catalogue, and the sentinelsat-style GeoJSON file."""

import dataclasses
import datetime as dt
import json
import os
import re

FIELDS = ("id", "name", "provider", "platform", "level", "tile_id", "relative_orbit", "orbit_direction",
          "sensing_start", "cloud_cover", "size_bytes", "online", "download_url", "checksum")

# S2B_MSIL1C_20230601T094549_N0509_R079_T34UDD_20230601T115221(.SAFE)
PRODUCT_NAME = re.compile(
    r"^(?P<platform>S2[A-D])_MSI(?P<level>L1C|L2A)_(?P<sensing>\d{8}T\d{6})_N\d{4}_R(?P<orbit>\d{3})_"
    r"T(?P<tile>\d{2}[A-Z]{3})_\d{8}T\d{6}(?:\.SAFE)?(?:\.zip)?$")


@dataclasses.dataclass
class Footprint:
    """A product found in a catalogue. ``geometry`` is the GeoJSON geometry exactly as the catalogue gave it
    (EPSG:4326); ``checksum`` is ``"<ALGORITHM>:<hex>"`` (e.g. ``MD5:3b44…``) or empty; ``extra`` holds what a
    catalogue offers beyond the schema (assets, quicklook URL) for the downloader and the panel."""

    id: str
    name: str
    provider: str
    geometry: dict
    sensing_start: dt.datetime
    platform: str = ""
    level: str = ""
    tile_id: str = ""
    relative_orbit: int = None
    orbit_direction: str = ""
    cloud_cover: float = None
    size_bytes: int = None
    online: bool = None
    download_url: str = ""
    checksum: str = ""
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        keys = ("platform", "level", "tile_id", "relative_orbit")
        if all(getattr(self, key) for key in keys):
            return  # nothing to complete (and no name parsing: searches build thousands of these)
        parsed = parse_product_name(self.name)
        # Catalogues leave some attributes out; the product name always carries them.
        for key in keys:
            if not getattr(self, key) and parsed.get(key):
                setattr(self, key, parsed[key])

    def attributes(self):
        """Values in FIELDS order (sensing_start as an aware UTC datetime)."""
        return [getattr(self, name) for name in FIELDS]


def parse_product_name(name):
    """platform, level, sensing time, relative orbit and tile from an ESA product name ({} when it is not one)."""
    match = PRODUCT_NAME.match(os.path.basename(name or ""))
    if not match:
        return {}
    return {
        "platform": match.group("platform"),
        "level": match.group("level"),
        "sensing_start": dt.datetime.strptime(match.group("sensing"), "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc),
        "relative_orbit": int(match.group("orbit")),
        "tile_id": match.group("tile"),
    }


def parse_time(text):
    """An ISO 8601 timestamp as an aware UTC datetime; tolerant of 'Z', missing or extra fraction digits."""
    text = text.strip().replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    match = re.match(r"^(.*T\d{2}:\d{2}:\d{2})(\.\d+)?(.*)$", text)
    if match:  # fromisoformat on Python < 3.11 wants 0, 3 or 6 fraction digits
        fraction = (match.group(2) or "")[1:7].ljust(6, "0") if match.group(2) else ""
        text = match.group(1) + (f".{fraction}" if fraction else "") + match.group(3)
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def merge(*result_lists):
    """One list without duplicates (same product name, or same id from one provider), sorted by sensing time.
    The first occurrence wins, so list preferred catalogues first."""
    seen, merged = set(), []
    for results in result_lists:
        for footprint in results:
            keys = {_product_key(footprint.name), (footprint.provider, footprint.id)}
            if keys & seen:
                continue
            seen |= keys
            merged.append(footprint)
    merged.sort(key=lambda f: (f.sensing_start, f.name))
    return merged


def _product_key(name):
    return re.sub(r"(\.SAFE|\.zip)$", "", os.path.basename(name or ""))


def to_geojson(footprints):
    """A FeatureCollection with the schema's properties plus ``identifier`` = product name (sentinelsat's
    ``--footprints`` file carries it, and scripts built on it read that key)."""
    features = []
    for footprint in footprints:
        properties = {name: _json_value(value) for name, value in zip(FIELDS, footprint.attributes())}
        properties["identifier"] = _product_key(footprint.name)
        features.append({"type": "Feature", "id": footprint.id, "properties": properties,
                         "geometry": footprint.geometry})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(footprints, path):
    """Write the GeoJSON through a temporary name, renamed when complete."""
    partial = f"{path}.part"
    with open(partial, "w", encoding="utf-8") as stream:
        json.dump(to_geojson(footprints), stream, ensure_ascii=False)
    os.replace(partial, path)


def read_geojson(path):
    """Footprints back from a GeoJSON written by :func:`write_geojson` (or any file with the schema's keys)."""
    with open(path, encoding="utf-8") as stream:
        collection = json.load(stream)
    footprints = []
    for feature in collection.get("features", []):
        p = dict(feature.get("properties") or {})
        name = p.get("name") or p.get("identifier") or p.get("title") or ""
        sensing = p.get("sensing_start") or p.get("beginposition") or p.get("datetime")
        footprints.append(Footprint(
            id=str(p.get("id") or feature.get("id") or p.get("uuid") or name), name=name,
            provider=p.get("provider") or "", geometry=feature.get("geometry"),
            sensing_start=parse_time(sensing) if sensing else parse_product_name(name).get("sensing_start"),
            platform=p.get("platform") or "", level=p.get("level") or "", tile_id=p.get("tile_id") or "",
            relative_orbit=p.get("relative_orbit"), orbit_direction=p.get("orbit_direction") or "",
            cloud_cover=p.get("cloud_cover"), size_bytes=p.get("size_bytes"), online=p.get("online"),
            download_url=p.get("download_url") or "", checksum=p.get("checksum") or ""))
    return footprints


def _json_value(value):
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value
