"""`from timm.data.transforms_factory import create_transform`, for npformer (see `npformer.timm.data`)."""

from . import create_transform

__all__ = ["create_transform"]
