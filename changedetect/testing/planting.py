"""Plant known disturbances into real imagery: an honest test of detection on real texture.

Takes one real acquisition as the *before* scene, makes an *after* scene from it with a slight
radiometric shift and fresh noise (what a second real overpass looks like when nothing changed),
and paints irregular blobs of bare rock/soil (quarry) or built surfaces (construction) into
vegetated ground. The painted blobs are the truth.

Two material sets:

- ``"fixed"`` (the default, kept for the original tests): ONE reddish rock spectrum for every
  quarry and ONE grey concrete spectrum for every construction site (:data:`SPECTRA`), painted as
  surface values with no atmosphere. A classifier can pass this by learning two colours.
- ``"varied"``: a library of real surface materials (:data:`MATERIALS`). A quarry is one rock or
  soil with bench shading (its brightness varies, its hue hardly); a construction site is a mosaic
  of sub-blobs of several built materials and bare soil, which is how building sites look at
  10 m. The materials are surface reflectances, so they are put under the scene's own atmosphere:
  the path radiance estimated from the before scene's dark objects is added (see
  :func:`path_radiance`), as it is in the real top-of-atmosphere pixels around them.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..algorithms.indices import ndvi

BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")

#: Surface spectra (B02, B03, B04, B08, B11, B12): reddish bright rock/soil, grey-flat concrete.
SPECTRA: dict[str, dict[str, float]] = {
    "quarry": {"B02": 0.14, "B03": 0.18, "B04": 0.24, "B08": 0.29, "B11": 0.39, "B12": 0.33},
    "construction": {"B02": 0.21, "B03": 0.22, "B04": 0.23, "B08": 0.25, "B11": 0.27, "B12": 0.24},
}


@dataclass(frozen=True)
class Material:
    """A surface material: its change type when it appears on cleared ground, and its surface
    reflectance in B02, B03, B04, B08, B11, B12."""

    name: str
    change_type: str
    reflectance: tuple[float, float, float, float, float, float]

    def spectrum(self) -> dict[str, float]:
        return dict(zip(BANDS, self.reflectance, strict=True))


# Surface reflectance in the Sentinel-2 bands B02 (490 nm), B03 (560), B04 (665), B08 (842),
# B11 (1610), B12 (2190). Typical values, read off the spectra of the USGS Spectral Library v7
# (Kokaly et al. 2017) and the ECOSTRESS/ASTER library (Baldridge et al. 2009; Meerdink et al.
# 2019) at the band centres and rounded to 0.01, cross-checked against Sentinel-2 L2A pixels of
# such surfaces as reported in the literature (e.g. Zha et al. 2003 NDBI; Rikimaru/BSI papers).
# They are representative, not exact convolutions with the band response functions. The physics
# each one carries:
MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        # --- quarry / bare ground -----------------------------------------------------------
        # hematite/goethite-rich laterite (oxisol): ferric iron absorbs below ~550 nm, so the
        # visible climbs steeply to the red; broad Fe3+ band near 900 nm flattens the NIR; kaolinite
        # Al-OH absorption at 2.2 um pulls B12 below B11.
        Material("red_laterite", "quarry", (0.06, 0.09, 0.17, 0.25, 0.33, 0.26)),
        # quartz sand with goethite coatings: brighter, yellow-brown (B04 > B03 > B02), SWIR high.
        Material("sandy_soil", "quarry", (0.11, 0.15, 0.21, 0.28, 0.37, 0.32)),
        # fresh granite / grey limestone rock face: feldspar and quartz, nearly flat, a slight
        # rise with wavelength; weak iron staining keeps B04 a little above B02.
        Material("grey_rock", "quarry", (0.16, 0.18, 0.20, 0.24, 0.30, 0.26)),
        # white limestone or marble quarry: calcite is bright and flat across the visible and
        # NIR; the carbonate absorption at 2.3-2.34 um lowers B12.
        Material("white_limestone", "quarry", (0.33, 0.37, 0.40, 0.44, 0.49, 0.40)),
        # dark shale / coal spoil: organic carbon absorbs everywhere; dark and nearly flat.
        Material("dark_spoil", "quarry", (0.05, 0.06, 0.07, 0.09, 0.13, 0.12)),
        # --- construction -------------------------------------------------------------------
        # fresh Portland-cement concrete: bright, grey, a gentle rise to the SWIR.
        Material("concrete", "construction", (0.22, 0.24, 0.26, 0.29, 0.33, 0.30)),
        # asphalt (fairly fresh bitumen and aggregate): dark, grey, slowly rising.
        Material("asphalt", "construction", (0.06, 0.07, 0.08, 0.10, 0.13, 0.12)),
        # red clay tiles / red-painted roofs: iron-oxide pigment like laterite, but fired clay has
        # a lower SWIR/NIR contrast.
        Material("red_roof", "construction", (0.07, 0.08, 0.18, 0.26, 0.30, 0.25)),
        # blue-painted steel roofs (common on sheds and site huts in China): cobalt/phthalo
        # pigments reflect blue and absorb red; no natural ground has B02 > B04 like this.
        Material("blue_roof", "construction", (0.20, 0.17, 0.10, 0.22, 0.18, 0.15)),
        # bare galvanised / aluminium sheet metal: bright and flat, the SWIR no higher than NIR
        # (no mineral absorption features, specular).
        Material("metal_roof", "construction", (0.30, 0.31, 0.31, 0.32, 0.30, 0.27)),
        # disturbed site soil (excavated, compacted): brown, like sandy soil but darker.
        Material("site_soil", "construction", (0.09, 0.12, 0.16, 0.22, 0.30, 0.26)),
    )
}

QUARRY_MATERIALS = tuple(m for m in MATERIALS.values() if m.change_type == "quarry")
#: Built materials a construction mosaic draws from (bare soil is added separately).
BUILT_MATERIALS = tuple(
    m for m in MATERIALS.values() if m.change_type == "construction" and m.name != "site_soil"
)


@dataclass(frozen=True)
class PlantedBlob:
    """A painted disturbance: its pixel mask and type (and, in the varied set, its materials)."""

    id: str
    change_type: str
    mask: np.ndarray
    materials: tuple[str, ...] = ()


def irregular_blob(rng: np.random.Generator, n_pixels: int) -> np.ndarray:
    """A connected, irregular blob of exactly `n_pixels` pixels.

    Grown from the centre, always taking the neighbouring pixel where a smooth random field minus
    the distance from the centre is highest: compact on the whole, ragged at the edge.
    """
    radius = int(np.ceil(np.sqrt(n_pixels / np.pi) * 2.0)) + 3
    size = 2 * radius + 1
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=max(radius / 4, 1.0))
    field = field / (field.std() + 1e-9) * 0.3 - np.hypot(yy, xx) / radius
    blob = np.zeros((size, size), bool)
    frontier: list[tuple[float, int, int]] = [(-field[radius, radius], radius, radius)]
    queued = {(radius, radius)}
    while frontier and blob.sum() < n_pixels:
        _, r, c = heapq.heappop(frontier)
        blob[r, c] = True
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            nr, nc = r + dr, c + dc
            if 0 <= nr < size and 0 <= nc < size and (nr, nc) not in queued:
                queued.add((nr, nc))
                heapq.heappush(frontier, (-field[nr, nc], nr, nc))
    return blob


#: Reflectance of the darkest real surfaces (deep clear water, dense shadow) in the visible:
#: what the dark-object percentile holds besides the path radiance.
DARK_SURFACE = 0.01
#: Band centres (um) of B02, B03, B04, B08, B11, B12.
CENTRES_UM = (0.490, 0.560, 0.665, 0.842, 1.610, 2.190)


def path_radiance(before: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Additive atmospheric path reflectance per band, estimated from the scene's dark objects.

    Dark-object subtraction (Chavez 1988): the 0.1th percentile of each band, less the reflectance
    of a dark surface. Path radiance falls with wavelength (Rayleigh ~ lambda^-4, aerosols
    ~ lambda^-1 to -2), so the estimate is made non-increasing along the bands and capped at the
    blue value scaled by lambda^-1 (the weakest aerosol dependence): a bright desert's darkest
    pixels are not atmosphere in the SWIR.
    """
    dark = [float(np.nanpercentile(before[b], 0.1)) - DARK_SURFACE for b in BANDS]
    out: dict[str, float] = {}
    running = max(dark[0], 0.0)
    for band, value, centre in zip(BANDS, dark, CENTRES_UM, strict=True):
        cap = max(dark[0], 0.0) * CENTRES_UM[0] / centre
        running = min(running, max(value, 0.0), cap)
        out[band] = running
    return out


def _mosaic_labels(rng: np.random.Generator, mask: np.ndarray, n_kinds: int) -> np.ndarray:
    """Sub-blobs inside `mask`: Voronoi cells of random seeds (cells of ~12-40 px, i.e. buildings,
    slabs and yards of 30-60 m), each given one of `n_kinds` materials, every kind used."""
    rows, cols = np.nonzero(mask)
    n_cells = max(n_kinds, int(round(rows.size / rng.uniform(12, 40))))
    pick = rng.choice(rows.size, size=min(n_cells, rows.size), replace=False)
    seeds = np.stack([rows[pick], cols[pick]], axis=1).astype(float)
    kinds = np.concatenate([np.arange(n_kinds), rng.integers(0, n_kinds, len(seeds))])[: len(seeds)]
    d = (rows[:, None] - seeds[None, :, 0]) ** 2 + (cols[:, None] - seeds[None, :, 1]) ** 2
    return kinds[np.argmin(d, axis=1)]


def _paint_varied(
    rng: np.random.Generator,
    after: dict[str, np.ndarray],
    full: np.ndarray,
    change_type: str,
    path: Mapping[str, float],
    gain: float,
    offset: float,
) -> tuple[str, ...]:
    n = int(full.sum())
    brightness = rng.uniform(0.85, 1.15)  # illumination / slope of the whole patch
    if change_type == "quarry":
        material = QUARRY_MATERIALS[int(rng.integers(len(QUARRY_MATERIALS)))]
        used: tuple[Material, ...] = (material,)
        refl = np.tile(np.asarray(material.reflectance, np.float32), (n, 1))
        # benches and faces: smooth shading of +-15 % (slope to the sun), same hue
        rows, cols = np.nonzero(full)
        field = ndimage.gaussian_filter(rng.normal(size=full.shape), sigma=2.0)
        field = field / (field.std() + 1e-9)
        refl *= (1.0 + 0.15 * np.clip(field[rows, cols], -2, 2))[:, None]
    else:
        k = int(rng.integers(2, 4))  # 2-3 built materials, plus bare site soil
        picks = rng.choice(len(BUILT_MATERIALS), size=k, replace=False)
        used = (*(BUILT_MATERIALS[i] for i in picks), MATERIALS["site_soil"])
        kinds = _mosaic_labels(rng, full, len(used))
        table = np.asarray([m.reflectance for m in used], np.float32)
        refl = table[kinds] * rng.uniform(0.9, 1.1, (n, 1)).astype(np.float32)
    refl *= brightness * (1 + rng.normal(0, 0.04, refl.shape))
    for j, band in enumerate(BANDS):
        after[band][full] = ((refl[:, j] + path[band]) * gain + offset).astype(np.float32)
    return tuple(m.name for m in used)


def plant_disturbances(
    before: Mapping[str, np.ndarray],
    *,
    seed: int,
    n_blobs: int = 24,
    sizes: tuple[int, int] = (12, 600),
    gain: float = 1.03,
    offset: float = 0.004,
    noise: float = 0.004,
    min_ndvi: float = 0.45,
    materials: str = "fixed",
) -> tuple[dict[str, np.ndarray], list[PlantedBlob]]:
    """An *after* scene made from `before`, with blobs painted into vegetated ground.

    `materials` is ``"fixed"`` (one spectrum per type, no atmosphere: the original behaviour) or
    ``"varied"`` (the :data:`MATERIALS` library under the scene's path radiance; see the module
    doc). Quarries and construction sites alternate.
    """
    if materials not in ("fixed", "varied"):
        raise ValueError(f"materials must be 'fixed' or 'varied', got {materials!r}")
    rng = np.random.default_rng(seed)
    shape = next(iter(before.values())).shape
    after = {
        b: (v * gain + offset + rng.normal(0, noise, shape)).astype(np.float32)
        for b, v in before.items()
    }
    path = path_radiance(before) if materials == "varied" else {}
    vegetated = ndvi(before["B04"], before["B08"]) > min_ndvi
    occupied = np.zeros(shape, bool)
    blobs: list[PlantedBlob] = []
    types = list(SPECTRA)
    attempts = 0
    while len(blobs) < n_blobs and attempts < n_blobs * 200:
        attempts += 1
        n_pixels = int(np.exp(rng.uniform(np.log(sizes[0]), np.log(sizes[1]))))
        shape_mask = irregular_blob(rng, n_pixels)
        h, w = shape_mask.shape
        if h >= shape[0] or w >= shape[1]:
            continue
        row = int(rng.integers(0, shape[0] - h))
        col = int(rng.integers(0, shape[1] - w))
        window = (slice(row, row + h), slice(col, col + w))
        spread = ndimage.binary_dilation(shape_mask, iterations=6)
        if occupied[window][spread].any() or vegetated[window][shape_mask].mean() < 0.95:
            continue
        full = np.zeros(shape, bool)
        full[window] = shape_mask
        change_type = types[len(blobs) % len(types)]
        used: tuple[str, ...] = ()
        if materials == "fixed":
            brightness = rng.uniform(0.85, 1.2)
            for band, value in SPECTRA[change_type].items():
                texture = 1 + rng.normal(0, 0.04, int(full.sum()))
                after[band][full] = (value * brightness * texture * gain + offset).astype(
                    np.float32
                )
        else:
            used = _paint_varied(rng, after, full, change_type, path, gain, offset)
        occupied |= full
        blobs.append(PlantedBlob(f"planted-{len(blobs):02d}", change_type, full, used))
    return after, blobs
