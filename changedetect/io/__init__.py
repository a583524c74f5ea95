"""I/O: imagery sources, output sinks and vector layers."""
