"""npformer: EfficientFormer and SwiftFormer in pure NumPy."""

__version__ = "0.1.0"
