"""Fakes of remote services for tests: they speak HTTP on localhost, so the real clients run."""
