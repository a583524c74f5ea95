"""Plant known disturbances into real imagery: an honest test of detection on real texture.

Takes one real acquisition as the *before* scene, makes an *after* scene from it with a slight
radiometric shift and fresh noise (what a second real overpass looks like when nothing changed),
and paints irregular blobs of bare rock/soil (quarry) or concrete (construction) into vegetated
ground. The painted blobs are the truth.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..algorithms.indices import ndvi

#: Surface spectra (B02, B03, B04, B08, B11, B12): reddish bright rock/soil, grey-flat concrete.
SPECTRA: dict[str, dict[str, float]] = {
    "quarry": {"B02": 0.14, "B03": 0.18, "B04": 0.24, "B08": 0.29, "B11": 0.39, "B12": 0.33},
    "construction": {"B02": 0.21, "B03": 0.22, "B04": 0.23, "B08": 0.25, "B11": 0.27, "B12": 0.24},
}


@dataclass(frozen=True)
class PlantedBlob:
    """A painted disturbance: its pixel mask and type."""

    id: str
    change_type: str
    mask: np.ndarray


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
) -> tuple[dict[str, np.ndarray], list[PlantedBlob]]:
    """An *after* scene made from `before`, with blobs painted into vegetated ground."""
    rng = np.random.default_rng(seed)
    shape = next(iter(before.values())).shape
    after = {
        b: (v * gain + offset + rng.normal(0, noise, shape)).astype(np.float32)
        for b, v in before.items()
    }
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
        row = int(rng.integers(0, shape[0] - h))
        col = int(rng.integers(0, shape[1] - w))
        window = (slice(row, row + h), slice(col, col + w))
        spread = ndimage.binary_dilation(shape_mask, iterations=6)
        if occupied[window][spread].any() or vegetated[window][shape_mask].mean() < 0.95:
            continue
        full = np.zeros(shape, bool)
        full[window] = shape_mask
        change_type = types[len(blobs) % len(types)]
        brightness = rng.uniform(0.85, 1.2)
        for band, value in SPECTRA[change_type].items():
            texture = 1 + rng.normal(0, 0.04, int(full.sum()))
            after[band][full] = (value * brightness * texture * gain + offset).astype(np.float32)
        occupied |= full
        blobs.append(PlantedBlob(f"planted-{len(blobs):02d}", change_type, full))
    return after, blobs
