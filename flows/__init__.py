"""Prefect flows that orchestrate the library (nightly runs per region).

`nightly` (flows/nightly.py) runs every AOI of one config; its tasks wrap `changedetect.pipeline`
steps (flows/tasks.py); flows/cluster.py picks where dask computes; flows/report.py writes the run
records and the markdown report.
"""
