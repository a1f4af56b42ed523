"""timm's surface for npformer's three families: a timm user's code runs with its imports changed,
`import timm` to `from npformer import timm` and `from timm.data import ...` to
`from npformer.timm.data import ...`.

    >>> from npformer import timm
    >>> model = timm.create_model("efficientformer_l1.snap_dist_in1k", pretrained=True).eval()
    >>> data_config = timm.data.resolve_model_data_config(model)
    >>> transforms = timm.data.create_transform(**data_config, is_training=False)
    >>> output = model(transforms(img)[None])    # timm: .unsqueeze(0); output: a NumPy [1, 1000] array

`create_model` and `list_models` are in `factory.py` (names, the hub cache, local files),
`resolve_data_config`, `resolve_model_data_config` and `create_transform` in `data/`. What differs
from timm: NumPy arrays instead of tensors (so `[None]` for `.unsqueeze(0)`, NumPy for
`.softmax` / `torch.topk`), no `.to(device)`, inference only, and seeded instead of random weights
with `pretrained=False`.
"""

from . import data
from .factory import TimmModel, create_model, list_models

__all__ = ["create_model", "list_models", "TimmModel", "data"]
