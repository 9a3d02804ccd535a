"""simclr_teach: the helper package of the SimCLR course (see README.md)."""

__version__ = "0.1.0"
