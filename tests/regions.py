"""A small local-folder region for nightly-run tests: two before images and its run config."""

from __future__ import annotations

from pathlib import Path

from changedetect.testing.rasters import make_grid, write_multiband

from .test_cli import scene_dn

GRID = make_grid("EPSG:32649", shape=(96, 112))


def write_nightly_region(root: Path, *, chips: bool = True) -> tuple[Path, Path]:
    """`root/imagery` with two 2024 before images of forest, and `root/nightly.yaml` running the
    AOI `valley` over it into `root/out`; the after images are the test's to add."""
    folder = root / "imagery"
    folder.mkdir()
    for day, seed in (("20240503", 1), ("20240513", 4)):
        write_multiband(folder / f"S2_{day}.tif", scene_dn(GRID.shape, seed), GRID, nodata=0)
    output = f"{{dir: {root / 'out'}}}" if chips else f"{{dir: {root / 'out'}, chips: false}}"
    config = root / "nightly.yaml"
    config.write_text(
        f"source: {{kind: local, path: {folder}}}\n"
        "aois: [{name: valley}]\n"
        "before: {start: 2024-04-01, end: 2024-06-30}\n"
        "after: {start: 2025-04-01, end: 2025-12-31}\n"
        f"output: {output}\n"
    )
    return folder, config
