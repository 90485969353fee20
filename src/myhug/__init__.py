"""myHUG gateway: the secure channel from the hospital's DPI to community physicians."""

__version__ = "0.1.0"
