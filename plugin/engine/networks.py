"""The S2 Toolbox biophysical neural networks (``resources/biophysical/s2tbx_3_0``, GPL-3.0: see its NOTICE).

One network per variable, platform and resolution: inputs normalised to [-1, 1] with 2(x - min)/(max - min) - 1,
one hidden layer of five tanh neurons, a linear output denormalised with 0.5(y + 1)(max - min) + min (Weiss and
Baret's ATBD; SNAP's ``BiophysicalAlgo``). Outputs below ``min - tolerance`` or above ``max + tolerance`` of the
network's ``ExtremeCases`` are flagged and kept; those within the tolerance are clipped to [min, max] and
flagged as clipped. An input is inside the definition domain when every band is within the domain's min/max
and the band values' cell (10 classes per band between those bounds) is one of the domain grid's rows.

Normalisation and denormalisation are folded into the weights once, so a pixel costs two small matrix products
and five tanh, in float32, on whole blocks of pixels.
"""

import dataclasses
import functools
import os

import numpy as np

from .errors import ParameterError

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources", "biophysical", "s2tbx_3_0")
# Our names, the S2 Toolbox's folder names, description and unit (CCC = LAI x leaf chlorophyll Cab, in µg/cm²
# of ground; CWC = LAI x leaf water Cw, in g/cm², as PROSPECT expresses Cab and Cw).
VARIABLES = {
    "LAI": ("LAI", "leaf area index", "m2/m2"),
    "FAPAR": ("FAPAR", "fraction of absorbed photosynthetically active radiation", "fraction"),
    "FCOVER": ("FCOVER", "fraction of vegetation cover", "fraction"),
    "CCC": ("LAI_Cab", "canopy chlorophyll content", "ug/cm2"),
    "CWC": ("LAI_Cw", "canopy water content", "g/cm2"),
}
BANDS = {20: ("B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12"), 10: ("B03", "B04", "B08")}
RESOLUTIONS = (20, 10)


@dataclasses.dataclass(frozen=True)
class Network:
    variable: str
    platform: str  # the network's own platform folder: S2A, S2B (S2A_10m for 10 m)
    resolution: int
    weights1: np.ndarray  # (5, inputs), normalisation folded in, float32
    bias1: np.ndarray  # (5, 1)
    weights2: np.ndarray  # (1, 5), denormalisation folded in
    bias2: float
    tolerance: float
    low: float
    high: float
    domain: "Domain"

    def run(self, inputs):
        """(values, clipped, beyond) for ``inputs`` (inputs x pixels, float32): the denormalised output, whether
        it was clipped into [low, high] within the tolerance, whether it lies beyond the tolerance (kept)."""
        hidden = self.weights1 @ inputs
        hidden += self.bias1
        np.tanh(hidden, out=hidden)
        values = (self.weights2 @ hidden)[0]
        values += self.bias2
        below, above = values < self.low, values > self.high
        beyond = (values < self.low - self.tolerance) | (values > self.high + self.tolerance)
        clipped = (below | above) & ~beyond
        np.clip(values, self.low, self.high, out=values, where=clipped)
        return values, clipped, beyond


@dataclasses.dataclass(frozen=True, eq=False)
class Domain:
    """The definition domain of a network over its bands (not the angles)."""

    low: np.ndarray  # (bands, 1)
    high: np.ndarray
    cells: np.ndarray  # sorted int64 keys of the grid rows

    def outside(self, bands):
        """Boolean per pixel: ``bands`` (bands x pixels reflectance) outside the domain. One band at a time, so
        the cell keys need one int64 per pixel, not one per band and pixel."""
        out = np.zeros(bands.shape[1], bool)
        keys = np.zeros(bands.shape[1], np.int64)
        for band in range(bands.shape[0] - 1, -1, -1):  # the key's digits as _keys makes them
            values, low, high = bands[band], self.low[band, 0], self.high[band, 0]
            out |= (values < low) | (values > high)
            cell = np.floor(values * (10.0 / (high - low)) + (1.0 - 10.0 * low / (high - low)))
            np.clip(cell, 0, 11, out=cell)
            keys *= 12
            keys += cell.astype(np.int64)
        found = np.minimum(np.searchsorted(self.cells, keys), len(self.cells) - 1)
        return out | (self.cells[found] != keys)


def _keys(index):
    """One integer per cell: the band indices (0..11 each) as digits in base 12."""
    keys = np.zeros(index.shape[1:], np.int64)
    for row in index[::-1]:
        keys *= 12
        keys += row
    return keys


def folder_for(platform, resolution):
    """The network folder for a platform ("S2A", "S2B", "S2C"...) at 10 or 20 m, and a note when it is another
    platform's (the toolbox has S2A and S2B 20 m networks and one 10 m set; S2C and S2D use S2B's)."""
    if resolution == 10:
        return "S2A_10m", None if platform == "S2A" else f"{platform} at 10 m uses the toolbox's 10 m networks (S2A)"
    if platform in ("S2A", "S2B"):
        return platform, None
    return "S2B", f"{platform} uses the toolbox's S2B networks (the toolbox has none of its own)"


def check_variables(variables, resolution):
    """ParameterError naming VARIABLES when a variable has no network at ``resolution``."""
    unknown = [v for v in variables if v not in VARIABLES]
    if unknown or not variables:
        raise ParameterError("VARIABLES", f"choose among {', '.join(VARIABLES)} (got {', '.join(unknown) or 'none'}).")
    missing = [v for v in variables if not os.path.isdir(os.path.join(FOLDER, folder_for("S2A", resolution)[0],
                                                                         VARIABLES[v][0]))]
    if missing:
        raise ParameterError("VARIABLES", f"{' and '.join(missing)} {'has' if len(missing) == 1 else 'have'} no "
                                          f"{resolution} m network in the S2 Toolbox; use RESOLUTION=20.")


@functools.cache
def load(variable, folder, resolution):
    """The :class:`Network` of ``variable`` (our name) from the network folder ``folder`` (see folder_for)."""
    name = VARIABLES[variable][0]
    path = os.path.join(FOLDER, folder, name)

    def table(part):
        return np.loadtxt(os.path.join(path, f"{name}_{part}"), delimiter=",", ndmin=2)

    normalisation = table("Normalisation")  # inputs x (min, max)
    weights1, bias1 = table("Weights_Layer1_Neurons"), table("Weights_Layer1_Bias").reshape(-1)
    weights2, bias2 = table("Weights_Layer2_Neurons").reshape(1, -1), table("Weights_Layer2_Bias").item()
    out_min, out_max = table("Denormalisation").reshape(-1)
    tolerance, low, high = table("ExtremeCases").reshape(-1)
    scale = 2.0 / (normalisation[:, 1] - normalisation[:, 0])
    shift = -2.0 * normalisation[:, 0] / (normalisation[:, 1] - normalisation[:, 0]) - 1.0
    half = 0.5 * (out_max - out_min)
    return Network(
        variable, folder, resolution,
        (weights1 * scale).astype(np.float32), (bias1 + weights1 @ shift).reshape(-1, 1).astype(np.float32),
        (weights2 * half).astype(np.float32), float(bias2 * half + half + out_min),
        float(tolerance), float(low), float(high), _domain(path, name))


@functools.cache
def _domain_from(minmax_text, grid_text):
    minmax = np.array([[float(v) for v in line.split(",")] for line in minmax_text.split()], dtype=np.float32)
    grid = np.array([[int(float(v)) for v in line.split(",")] for line in grid_text.split()], dtype=np.int64)
    return Domain(minmax[0].reshape(-1, 1), minmax[1].reshape(-1, 1), np.unique(_keys(grid.T)))


def _domain(path, name):
    """Networks with the same domain files share one :class:`Domain` (so a product checks it once)."""
    with open(os.path.join(path, f"{name}_DefinitionDomain_MinMax")) as handle:
        minmax = handle.read()
    with open(os.path.join(path, f"{name}_DefinitionDomain_Grid")) as handle:
        grid = handle.read()
    return _domain_from(minmax, grid)
