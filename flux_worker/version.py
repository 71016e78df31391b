"""The service's version, in a module of its own so any room can read it."""

__version__ = "1.2.0"
