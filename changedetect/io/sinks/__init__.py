"""Output sinks: GeoJSON clues, change rasters, image chips."""
