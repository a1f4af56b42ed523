"""One error taxonomy for npformer.

Every error npformer raises on bad input is a subclass of `NpformerError`, carries a message
that names the file, key, shape or value involved, and maps to one CLI exit code.
"""


class NpformerError(Exception):
    """Base class of every error npformer raises on purpose; raised itself for other refusals.

    Those are: overwriting a file, a place that cannot be written (an existing directory, a
    trailing separator or a missing parent directory for the one-file npformer format, an
    existing file for a directory format), resuming a results file of another run.

    Attributes
    ----------
    exit_code : int
        The status the command line exits with (1 here; each subclass has its own).
    """

    exit_code = 1


class ConfigError(NpformerError, ValueError):
    """A config or an argument value npformer cannot honour: config.json, metadata config,
    preprocessor config, variant name, path, dtype, flag.

    Also a `ValueError`. Arguments are checked the same way at every entry point: a path that is
    None or "" (never read as the current directory), a number or bytes; `dtype` other than
    np.float32 / np.float64; a flag that is not True or False; a hub option of the wrong type.
    """

    exit_code = 3


class WeightFileError(NpformerError):
    """A weight file that cannot be read: missing, truncated, corrupt, wrong format, or NaN / inf
    weights.

    Also a hub repo, revision or file that cannot be found, and weights no trained model has
    (NaN, ±inf, values beyond float32's range, negative BatchNorm variances), each tensor named
    with its count.
    """

    exit_code = 4


class UnsafePickleError(WeightFileError):
    """A pickle in a .pth/.bin file references something other than tensors and plain containers.

    Raised before anything from the pickle is executed. A `WeightFileError`.
    """

    exit_code = 5


class CheckpointMismatchError(NpformerError):
    """A readable checkpoint whose tensors do not fit the model: missing or unexpected keys,
    wrong shapes or dtypes, contradicting metadata.

    Every missing, unexpected and mis-shaped tensor is named; metadata that contradicts itself
    or the tensors (family, variant, SwiftFormer attention generation) is named with both sides.
    """

    exit_code = 6


class InputError(NpformerError, ValueError):
    """Pixel values the model cannot take (wrong rank, channels, dtype or size; NaN or inf), or
    a records file that breaks the schema.

    Also a `ValueError`. Integer and bool pixel values are refused (raw 0..255 pixels would give
    plausible wrong logits), as are empty batches and sizes whose attention grid the model is
    not built for. A `--compare` / `--resume` records file is refused with its file, line and
    field, before the first batch runs.
    """

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
