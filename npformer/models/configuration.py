"""What every family's config shares: transformers' `config.json`, read, checked and written.

A family's config (`<family>/config.py`) is a dataclass subclass of `ClassifierConfig` carrying
every field of the reference's class of the same name, with the same code defaults, plus the
generic `PretrainedConfig` fields that matter to a classifier (`num_labels`, `id2label`,
`problem_type`, ...). Each architecture field is either honoured by npformer's forward pass or
rejected with a message saying why; training-only fields (dropout, drop-path, init) are kept so
that a config round-trips.
"""

from __future__ import annotations

import copy
import functools
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar
from pathlib import Path

from ..errors import ConfigError
from ..jsonfile import read_json_object

# Activations transformers' ACT2FN offers that npformer implements (see layers.py).
SUPPORTED_ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh")

# Generic PretrainedConfig fields that do not change an image classifier's numbers: kept verbatim.
_PASSTHROUGH = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path",
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
    "tf_legacy_loss", "pruned_heads", "tie_word_embeddings", "chunk_size_feed_forward",
    "is_encoder_decoder", "is_decoder", "cross_attention_hidden_size", "add_cross_attention",
    "tie_encoder_decoder", "finetuning_task", "tokenizer_class", "prefix", "bos_token_id",
    "pad_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id",
    "task_specific_params", "label2id", "_commit_hash", "_attn_implementation_internal",
}


# the largest integer a config field takes: sizes, counts and strides beyond it describe no model, and
# would overflow NumPy's shapes or memory before any check could name the field
MAX_INT = 2**31 - 1


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_problem(value, hint) -> str | None:
    """Why `value` (from JSON or a caller) does not fit a field annotated `hint`; None if it does."""
    if isinstance(hint, types.UnionType):  # X | None
        return None if any(_type_problem(value, h) is None for h in hint.__args__) else f"expected {hint}"
    if hint is type(None):
        return None if value is None else "expected None"
    if hint is int:
        if not _is_int(value):
            return "expected an integer"
        return None if abs(value) <= MAX_INT else f"beyond any model's sizes (at most {MAX_INT:,})"
    if hint is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "expected a number"
    if hint in (bool, str, list, dict):
        return None if isinstance(value, hint) else f"expected a {hint.__name__}"
    return None




@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def conv_out(side: int, kernel: int, stride: int, pad: int) -> int:
    """Output side of a convolution (or pooling) along one axis."""
    return (side + 2 * pad - kernel) // stride + 1


@dataclass
class ClassifierConfig:
    """What every family's config shares: the label fields and reading and writing config.json.

    A config is a dataclass, checked when it is made: each field must have the type its
    annotation says and a value npformer can run, else a `ConfigError` names the field.

    Parameters
    ----------
    num_labels : int, default 2
        Classes of the heads; 0 gives models without heads (the pooled features come out).
        transformers sets it from `id2label` when a config.json has one.
    id2label : dict of int to str, optional
        Class names by index.
    problem_type : str, optional
        The loss `labels` get: "regression", "single_label_classification" or
        "multi_label_classification"; None decides from the labels, as transformers does.
    extra : dict, optional
        The other config.json fields transformers writes (`architectures`, `torch_dtype`,
        `transformers_version`, ...), kept so that a config round-trips.
    """

    model_type: ClassVar[str] = ""
    # a family's field checks: list fields and what each entry must be ("int" >= 0, "positive", "bool"),
    # integer fields that must be >= 1 (sizes, counts, strides) and >= 0 (paddings)
    list_fields: ClassVar[dict] = {}
    positive_fields: ClassVar[tuple] = ()
    non_negative_fields: ClassVar[tuple] = ()
    num_labels: int = 2
    id2label: dict | None = None
    problem_type: str | None = None
    extra: dict = field(default_factory=dict)  # everything else from config.json, round-tripped

    def __post_init__(self):
        self.validate()

    @classmethod
    def from_dict(cls, d: dict, source: str = "config"):
        """Build a config from a transformers-style `config.json` dict.

        Parameters
        ----------
        d : dict
            The config's fields; `model_type`, when present, must be the family's.
        source : str, default "config"
            What to call the dict in error messages (a file's path).

        Returns
        -------
        ClassifierConfig
            The family's config.

        Raises
        ------
        ConfigError
            Another `model_type`, a field the class does not have (npformer cannot tell whether
            it changes the model), or a value of the wrong type or out of range.
        """
        d = copy.deepcopy(d)
        model_type = d.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected {cls.model_type!r}")
        known = {f.name for f in fields(cls)} - {"extra", "num_labels", "id2label"}
        kwargs = {k: d.pop(k) for k in list(d) if k in known}
        # transformers: id2label decides num_labels; without it num_labels defaults to 2
        id2label = d.pop("id2label", None)
        num_labels = d.pop("num_labels", None)
        if id2label is not None:
            try:
                kwargs["id2label"] = {int(k): v for k, v in id2label.items()}
            except (AttributeError, TypeError, ValueError):
                raise ConfigError(f"{source}: id2label must map class indices to names, got {id2label!r:.80}") from None
            kwargs["num_labels"] = len(id2label)
        elif num_labels is not None:
            kwargs["num_labels"] = num_labels
        for key in list(d):
            if key not in _PASSTHROUGH:
                raise ConfigError(
                    f"{source}: field {key!r} is not one of {cls.__name__}'s fields, and npformer "
                    "cannot tell whether it changes the model; remove it or report it"
                )
        try:
            return cls(**kwargs, extra=d)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        except TypeError as err:  # a field of the wrong type
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_json_file(cls, path):
        """Read a config.json strictly.

        Parameters
        ----------
        path : str or os.PathLike
            The config.json file.

        Returns
        -------
        ClassifierConfig
            The family's config.

        Raises
        ------
        ConfigError
            A file that is missing, not UTF-8, not a JSON object, holds a key twice or nests too
            deep, or fields `from_dict` refuses; each message names the file.
        """
        path = Path(path)
        return cls.from_dict(read_json_object(path), source=str(path))

    @classmethod
    def from_pretrained(cls, path, *, revision=None, cache_dir=None, local_files_only=False, token=None):
        """Read the config of a model directory, its config.json, or a Hugging Face hub id.

        transformers' `Config.from_pretrained`. For the config of any checkpoint, whatever its
        family or format, use `npformer.AutoConfig`.

        Parameters
        ----------
        path : str or os.PathLike
            A model directory, a config.json, or a hub id.
        revision : str, optional
            Hub ids only: the branch, tag or commit.
        cache_dir : str or os.PathLike, optional
            Hub ids only: the Hugging Face cache.
        local_files_only : bool, default False
            Hub ids only: never download.
        token : str or bool, optional
            Hub ids only: a token for a private repo.

        Returns
        -------
        ClassifierConfig
            The family's config.

        Raises
        ------
        ConfigError
            A config.json `from_json_file` refuses.
        WeightFileError
            A hub repo or file that cannot be found.
        MissingExtraError
            A hub id without huggingface_hub installed.
        """
        from ..hub import CONFIG_FILES, resolve

        local = resolve(path, CONFIG_FILES, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                        token=token)
        return cls.from_json_file(local / "config.json" if local.is_dir() else local)

    def to_dict(self) -> dict:
        """The config as a transformers `config.json` dict.

        Returns
        -------
        dict
            Every field, `model_type`, and the extra fields read from a config.json.
        """
        d = asdict(self)
        extra = d.pop("extra")
        if d["id2label"] is not None:
            d["id2label"] = {str(k): v for k, v in d["id2label"].items()}
        else:
            del d["id2label"]
        # npformer-only or optional fields stay out of config.json unless set
        d = {k: v for k, v in d.items() if not (k in ("hidden_size", "attention_bias_resize") and v is None)}
        d.update(extra)
        d["model_type"] = self.model_type
        return d

    def to_json_file(self, path) -> None:
        """Write the config as a config.json (`to_dict`, keys sorted, indented).

        Parameters
        ----------
        path : str or os.PathLike
            The file to write.
        """
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def check_types(self) -> None:
        """Every field of the type its annotation says, list entries and sizes in range: what the
        checks below and the weight schema take for granted (a config.json can hold anything)."""
        hints = _hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            problem = _type_problem(value, hints[f.name])
            if problem:
                raise ConfigError(f"{f.name}={value!r}: {problem}")
            entries = self.list_fields.get(f.name)
            if entries == "bool" and not all(isinstance(v, bool) or v in (0, 1) for v in value):
                raise ConfigError(f"{f.name}={value!r}: expected true/false entries")
            if entries in ("int", "positive") and not all(_is_int(v) and (entries == "positive") <= v <= MAX_INT
                                                          for v in value):
                raise ConfigError(f"{f.name}={value!r}: expected {'positive' if entries == 'positive' else 'non-negative'} "
                                  "integer entries")
            if f.name in self.positive_fields and value is not None and value < 1:
                raise ConfigError(f"{f.name}={value!r} must be >= 1")
            if f.name in self.non_negative_fields and value < 0:
                raise ConfigError(f"{f.name}={value!r} must be >= 0")
        if self.id2label is not None and not all(_is_int(k) for k in self.id2label):
            raise ConfigError(f"id2label keys must be class indices, got {sorted(map(repr, self.id2label))[:5]}")

    def validate(self) -> None:
        self.check_types()
        if self.num_labels < 0:
            raise ConfigError(f"num_labels={self.num_labels} must be >= 0")
        if self.problem_type not in (None, "regression", "single_label_classification", "multi_label_classification"):
            raise ConfigError(f"problem_type={self.problem_type!r} is not one transformers understands")
        if not 0 < self.batch_norm_eps < float("inf"):
            raise ConfigError(f"batch_norm_eps={self.batch_norm_eps} must be > 0 and finite")
        strategy = getattr(self, "attention_bias_resize", None)
        if strategy not in (None, "pairwise"):  # "table" rebuilds the config at load; only "pairwise" runs in the forward
            raise ConfigError(f"attention_bias_resize={strategy!r}: a config records None or 'pairwise' (the bias "
                              "resized in each forward); 'table' is applied once at load and gives a config built "
                              "for the new size")
