"""Revision scripts (a package, so that installing changedetect ships them)."""
