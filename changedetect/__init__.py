"""changedetect: satellite change detection that turns new human disturbance into patch clues."""

__version__ = "0.1.0"
