"""Spectral indices on reflectance arrays (numpy, dask or xarray alike)."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from .arrays import where

A = TypeVar("A")


def normalized_difference(a: A, b: A) -> A:
    """(a - b) / (a + b); NaN where the denominator is zero."""
    total = a + b  # type: ignore[operator]
    # where() keeps this lazy for dask and xarray inputs and avoids divide-by-zero warnings
    safe = where(total == 0, np.nan, total)
    return (a - b) / safe  # type: ignore[operator,return-value]


def ndvi(b04: A, b08: A) -> A:
    """Normalised difference vegetation index (B08 - B04) / (B08 + B04)."""
    return normalized_difference(b08, b04)


def bsi(b02: A, b04: A, b08: A, b11: A) -> A:
    """Bare soil index ((B11 + B04) - (B08 + B02)) / ((B11 + B04) + (B08 + B02))."""
    return normalized_difference(b11 + b04, b08 + b02)  # type: ignore[operator]


def ndbi(b08: A, b11: A) -> A:
    """Normalised difference built-up index (B11 - B08) / (B11 + B08)."""
    return normalized_difference(b11, b08)


def mndwi(b03: A, b11: A) -> A:
    """Modified normalised difference water index (B03 - B11) / (B03 + B11)."""
    return normalized_difference(b03, b11)
