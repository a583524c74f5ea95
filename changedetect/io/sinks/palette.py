"""PNG `data:` URIs of imagery with a few exact overlay colours, for the self-contained report.

True-colour PNGs of noisy imagery compress badly (~35 kB per 128 px chip); an octree palette makes
that ~10 kB with no visible loss (mean error ~3/255) in under a millisecond, which keeps a report
of hundreds of clues small and quick.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from ...algorithms.jit import ngjit

#: The patch outline drawn on chips and on the overview.
OUTLINE_RGB = (255, 230, 0)
#: Colour of the protection-zone boundaries on the overview.
ZONE_RGB = (0, 220, 255)
#: Colours drawn over the imagery. They get the last palette slots, after the imagery has been
#: quantised, so outlines and numbers keep their exact colour however busy the picture is.
OVERLAY = (OUTLINE_RGB, (0, 0, 0), (255, 255, 255), ZONE_RGB)
_BASE_COLOURS = 256 - len(OVERLAY)
SLOT_OUTLINE, SLOT_BLACK, SLOT_WHITE, SLOT_ZONE = range(_BASE_COLOURS, 256)


def palette_image(rgb: np.ndarray) -> Image.Image:
    """An (h, w, 3) uint8 array as a 256-colour palette image with the overlay slots reserved.

    Pixels already in OUTLINE_RGB (outlines drawn by chips.py or over the overview) are put in
    the outline slot: quantising alone can merge a thin outline into a nearby imagery colour and
    make it vanish.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    image = Image.fromarray(rgb, mode="RGB").quantize(
        _BASE_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
    )
    palette = (image.getpalette() or [])[: _BASE_COLOURS * 3]
    palette += [0] * (_BASE_COLOURS * 3 - len(palette))
    for colour in OVERLAY:
        palette.extend(colour)
    image.putpalette(palette)
    outline, found = _colour_mask(rgb, *OUTLINE_RGB)
    if found:
        image.paste(SLOT_OUTLINE, None, Image.fromarray(outline, mode="L"))
    return image


@ngjit
def _colour_mask(rgb: np.ndarray, red: int, green: int, blue: int) -> tuple[np.ndarray, bool]:
    # where an (h, w, 3) image is exactly one colour, as a paste mask (255 there, else 0), and
    # whether it is anywhere: one pass instead of numpy's five over every chip
    h, w, _ = rgb.shape
    mask = np.zeros((h, w), np.uint8)
    found = False
    for y in range(h):
        for x in range(w):
            if rgb[y, x, 0] == red and rgb[y, x, 1] == green and rgb[y, x, 2] == blue:
                mask[y, x] = 255
                found = True
    return mask, found


#: zlib level of every PNG written, 3 rather than Pillow's 6: a chip or report card encodes in a
#: third of the time (1.37 -> 0.49 ms) for files 10 % larger; with 6,302 clues on the 10,000²
#: bench scene the run took 140 -> 108 CPU-s.
PNG_COMPRESS_LEVEL = 3


def png_bytes(image: Image.Image) -> bytes:
    """`image` encoded as PNG: the one encoding of the chip files and the report's images."""
    buffer = io.BytesIO()
    # no `optimize`: ~10 % smaller files for ~10x the encoding time on a big overview
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def png_data_uri(image: Image.Image) -> str:
    """`image` as a `data:image/png;base64,...` URI, which a page shows without a request."""
    return png_uri(png_bytes(image))


def png_uri(png: bytes) -> str:
    """PNG file contents as a `data:` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
