"""Prefect flows that orchestrate the library (nightly runs per region).

`nightly` (flows/nightly.py) runs every AOI of one config through `changedetect.runs`, the loop
`changedetect run` uses too, with Prefect tasks as its steps (flows/tasks.py); flows/cluster.py
picks where dask computes.
"""
