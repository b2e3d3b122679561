"""Sun and viewing angles of a Sentinel-2 tile, from the angle grids of its metadata, at any pixel.

Sen2Cor's and ESA's granule metadata (``MTD_TL.xml``, Earth Search's ``granule_metadata.xml``) and MAJA's
``MTD_ALL.xml`` hold the same grids: 23 x 23 values every 5000 m, the first at the tile's upper-left corner,
for the sun (``Sun_Angles_Grid``/``Sun_Angles_Grids``) and for the view of every band and detector
(``Viewing_Incidence_Angles_Grids``), each with a ``Zenith`` and an ``Azimuth`` made of ``VALUES`` rows. A
detector's grid is NaN where the detector does not see.

The view grid used is the mean over bands and detectors (what SNAP calls ``view_zenith_mean``; azimuths are
averaged as directions, so 359° and 1° give 0°). Nodes no detector sees (the swath's outer edge) take their
nearest seen neighbours' values, so pixels near the edge interpolate from real numbers. Values at pixel centres
are bilinear in the grid.
"""

import dataclasses
import xml.etree.ElementTree as ET

import numpy as np

from .errors import S2Error


@dataclasses.dataclass
class AngleGrids:
    """Grids in degrees, rows north to south; node (0, 0) at (``origin_x``, ``origin_y``) in the tile's CRS."""

    sun_zenith: np.ndarray
    sun_azimuth: np.ndarray
    view_zenith: np.ndarray
    view_azimuth: np.ndarray
    origin_x: float
    origin_y: float
    step_x: float = 5000.0
    step_y: float = 5000.0
    per_scene: bool = False  # True: only the scene's mean angles were in the metadata

    def at(self, xs, ys):
        """(sun zenith, sun azimuth, view zenith, view azimuth) in degrees, float32, for pixel centres at
        ``xs`` (columns, 1-D) and ``ys`` (rows, 1-D) in the tile's CRS; arrays of shape (len(ys), len(xs))."""
        fx = np.clip((np.asarray(xs, float) - self.origin_x) / self.step_x, 0, self.sun_zenith.shape[1] - 1)
        fy = np.clip((self.origin_y - np.asarray(ys, float)) / self.step_y, 0, self.sun_zenith.shape[0] - 1)
        zenith = [_bilinear(grid, fx, fy) for grid in (self.sun_zenith, self.view_zenith)]
        azimuth = [_bilinear_direction(grid, fx, fy) for grid in (self.sun_azimuth, self.view_azimuth)]
        return zenith[0], azimuth[0], zenith[1], azimuth[1]


def read(path, origin=None):
    """The :class:`AngleGrids` of a metadata file. ``origin`` (x, y): the grid's first node when the file does
    not say (its ``ULX``/``ULY``). A file without grids but with mean angles gives constant grids
    (``per_scene``); one with neither raises S2Error."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise S2Error(f"Cannot read the angles in {path}: {error}.") from None
    ulx, uly = first_number(root, "ULX"), first_number(root, "ULY")
    if ulx is None or uly is None:
        if origin is None:
            raise S2Error(f"{path} does not say where its angle grids start (no ULX/ULY).")
        ulx, uly = origin
    sun = next((e for e in root.iter() if local_name(e.tag) in ("Sun_Angles_Grid", "Sun_Angles_Grids")), None)
    views = [e for e in root.iter() if local_name(e.tag) == "Viewing_Incidence_Angles_Grids"]
    sun_grids = _pair(sun) if sun is not None else None
    view_grids = [pair for pair in (_pair(v) for v in views) if pair is not None]
    if sun_grids is None or not view_grids:
        return _per_scene(root, path, ulx, uly)
    step_x, step_y = _steps(sun)
    shape = sun_grids[0].shape
    view_grids = [pair for pair in view_grids if pair[0].shape == shape]
    view_zenith = _filled(_nanmean([z for z, _ in view_grids]))
    view_azimuth = _filled(_direction_mean([a for _, a in view_grids]))
    return AngleGrids(_filled(sun_grids[0]), _filled(sun_grids[1]), view_zenith, view_azimuth, ulx, uly, step_x,
                      step_y)


def local_name(tag):
    """An XML tag without its namespace (ESA's and MAJA's metadata use several)."""
    return tag.rsplit("}", 1)[-1]


def _child(element, name):
    return next((c for c in element if local_name(c.tag) == name), None)


def first_number(root, name):
    """The number ending the text of the first element ``name`` under ``root`` (None when absent or not one)."""
    element = next((e for e in root.iter() if local_name(e.tag) == name), None)
    return _number(element.text) if element is not None else None


def _number(text):
    words = (text or "").split()
    try:
        return float(words[-1]) if words else None
    except ValueError:
        return None


def _pair(element):
    """(zenith grid, azimuth grid) of one Sun or Viewing element, None when either is missing or empty."""
    grids = []
    for name in ("Zenith", "Azimuth"):
        child = _child(element, name)
        rows = [r for r in child.iter() if local_name(r.tag) == "VALUES"] if child is not None else []
        if not rows:
            return None
        try:
            grid = np.array([[float(v) for v in r.text.split()] for r in rows], dtype=float)
        except (ValueError, AttributeError):
            return None
        if grid.ndim != 2 or grid.size == 0:
            return None
        grids.append(grid)
    return tuple(grids) if grids[0].shape == grids[1].shape else None


def _steps(sun):
    zenith = _child(sun, "Zenith")
    col, row = (_number(_child(zenith, n).text) if _child(zenith, n) is not None else None
                for n in ("COL_STEP", "ROW_STEP"))
    return col or 5000.0, row or 5000.0


def _per_scene(root, path, ulx, uly):
    """Constant grids from the mean angles (``Mean_Sun_Angle``, ``Mean_Viewing_Incidence_Angle``)."""
    means = {}
    for element in root.iter():
        name = local_name(element.tag)
        if name in ("Mean_Sun_Angle", "Sun_Angles") and "sun" not in means:
            pair = _angle_pair(element)
            if pair:
                means["sun"] = pair
        elif name == "Mean_Viewing_Incidence_Angle":
            pair = _angle_pair(element)
            if pair:
                means.setdefault("view", []).append(pair)
    if "sun" not in means or not means.get("view"):
        raise S2Error(f"{path} holds no sun and viewing angles.")
    view = np.array(means["view"], dtype=float)
    constant = [np.full((2, 2), value) for value in
                (means["sun"][0], means["sun"][1], view[:, 0].mean(), _direction_mean(list(view[:, 1:2])).item())]
    return AngleGrids(*constant, origin_x=ulx, origin_y=uly, step_x=1e9, step_y=1e9, per_scene=True)


def _angle_pair(element):
    zenith, azimuth = _child(element, "ZENITH_ANGLE"), _child(element, "AZIMUTH_ANGLE")
    values = [_number(e.text) if e is not None else None for e in (zenith, azimuth)]
    return tuple(values) if None not in values else None


def _nanmean(grids):
    stack = np.stack(grids)
    seen = np.isfinite(stack)
    total = np.where(seen, stack, 0.0).sum(axis=0)
    count = seen.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _direction_mean(grids):
    radians = np.radians(np.stack(grids))
    seen = np.isfinite(radians)
    sin = np.where(seen, np.sin(radians), 0.0).sum(axis=0)
    cos = np.where(seen, np.cos(radians), 0.0).sum(axis=0)
    mean = np.degrees(np.arctan2(sin, cos)) % 360.0
    return np.where(seen.any(axis=0), mean, np.nan)


def _filled(grid):
    """NaN nodes take the mean of their seen 8-neighbours, ring after ring, until none is left."""
    grid = np.array(grid, dtype=float)
    if not np.isfinite(grid).any():
        raise S2Error("An angle grid holds no values.")
    while not np.isfinite(grid).all():
        seen = np.isfinite(grid)
        padded = np.pad(np.where(seen, grid, 0.0), 1)
        weight = np.pad(seen.astype(float), 1)
        total = sum(padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        count = sum(weight[1 + dy:weight.shape[0] - 1 + dy, 1 + dx:weight.shape[1] - 1 + dx]
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        grid = np.where(seen, grid, np.where(count > 0, total / np.maximum(count, 1), np.nan))
    return grid


def _weights(fraction, size):
    low = np.minimum(np.floor(fraction).astype(int), size - 2) if size > 1 else np.zeros(len(fraction), int)
    return low, (fraction - low) if size > 1 else np.zeros(len(fraction))


def _bilinear(grid, fx, fy):
    if grid.shape[0] == 1 or grid.shape[1] == 1:
        grid = np.broadcast_to(grid, (max(grid.shape[0], 2), max(grid.shape[1], 2)))
    x0, wx = _weights(fx, grid.shape[1])
    y0, wy = _weights(fy, grid.shape[0])
    top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x0 + 1] * wx
    bottom = grid[y0 + 1][:, x0] * (1 - wx) + grid[y0 + 1][:, x0 + 1] * wx
    return (top * (1 - wy)[:, None] + bottom * wy[:, None]).astype(np.float32)


def _bilinear_direction(grid, fx, fy):
    """Bilinear on the unit circle: azimuths across north (359°, 1°) interpolate to 0°, not 180°."""
    radians = np.radians(grid)
    sin, cos = _bilinear(np.sin(radians), fx, fy), _bilinear(np.cos(radians), fx, fy)
    return (np.degrees(np.arctan2(sin, cos)) % 360.0).astype(np.float32)
