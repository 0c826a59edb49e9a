"""The package version, in a module of its own so that the package face and its modules
(the run records it) both import it, one way."""

__version__ = "0.1.0"
