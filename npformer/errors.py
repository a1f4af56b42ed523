"""One error taxonomy for npformer.

Every error npformer raises on bad input is a subclass of `NpformerError`, carries a message
that names the file, key, shape or value involved, and maps to one CLI exit code.
"""


class NpformerError(Exception):
    """Base class of every error npformer raises on purpose."""

    exit_code = 1


class ConfigError(NpformerError, ValueError):
    """A config (config.json, metadata, variant name) that npformer cannot honour."""

    exit_code = 3


class WeightFileError(NpformerError):
    """A weight file that cannot be read: missing, truncated, corrupt, wrong format."""

    exit_code = 4


class UnsafePickleError(WeightFileError):
    """A pickle in a .pth/.bin file references something other than tensors and plain containers.

    Raised before anything from the pickle is executed.
    """

    exit_code = 5


class CheckpointMismatchError(NpformerError):
    """A readable checkpoint whose tensors do not fit the model: missing or unexpected keys,
    wrong shapes or dtypes, contradicting metadata."""

    exit_code = 6


class InputError(NpformerError, ValueError):
    """Pixel values the model cannot take: wrong rank, channels, dtype or spatial size."""

    exit_code = 7


class MissingExtraError(NpformerError):
    """Something that needs an optional extra that is not installed: the oracle (torch,
    transformers, timm) for `npformer parity`, huggingface_hub (the hub extra) for hub ids. The
    message says what to install, and how to do without it where one can."""

    exit_code = 2


class ImageError(NpformerError):
    """An image that cannot be opened, decoded or preprocessed: missing, not an image, truncated,
    a decompression bomb, or too extreme an aspect ratio for the resize."""

    exit_code = 8
