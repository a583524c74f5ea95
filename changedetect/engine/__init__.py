"""The pass over the imagery, independent of where its blocks come from and go."""
