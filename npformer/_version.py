"""npformer's version, in a module of its own so that anything may import it while the package is still importing."""

__version__ = "0.1.0"
