"""Pure numerics on numpy / xarray / dask arrays: no I/O here."""
