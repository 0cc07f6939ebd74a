"""spin-hmr: 3D human body regression trained with SMPLify model fitting in the loop."""

__version__ = "0.1.0"
