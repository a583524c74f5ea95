"""Imagery sources behind one protocol."""

from .base import ImagerySource

__all__ = ["ImagerySource"]
