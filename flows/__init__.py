"""Prefect flows that orchestrate the library (nightly runs per region)."""
