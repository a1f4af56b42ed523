"""timm, imported so that it loads next to a CPU torch (the oracle tier's references need it)."""


def import_timm():
    """Import timm on a machine whose torchvision wheel cannot load its compiled ops.

    timm imports torchvision, whose import registers fake kernels for `torchvision::nms` and
    `qnms` and fails if those operators were never defined (the CUDA torchvision build next to
    CPU torch). Defining the two schemas first lets the import succeed; no classifier uses them.
    """
    import torch

    try:
        import timm  # noqa: F401
    except RuntimeError:
        lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_timm.library = lib  # keep the definitions alive
        import timm  # noqa: F401
    return timm
