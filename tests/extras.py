"""Tests that need an optional extra: skip without it, except under the extra's NPFORMER_REQUIRE_*
switch (CI's tiers), where a missing module is a failure.

The message avoids pytest.importorskip's wording, which conftest.py turns into a failure under
NPFORMER_REQUIRE_ORACLE=1: that switch is about torch, not about the other extras.
"""

import importlib
import importlib.util
import os

import pytest


def importable(module) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def need(*modules, extra="notebooks", switch="NPFORMER_REQUIRE_NOTEBOOKS"):
    """The first of `modules`, imported; a skip when one of `extra`'s modules is missing (a failure
    under `switch`=1)."""
    missing = [m for m in modules if not importable(m)]
    if missing:
        message = f"the {extra} extra is not installed (missing {', '.join(missing)}): pip install -e '.[{extra}]'"
        if os.environ.get(switch) == "1":
            pytest.fail(f"{switch}=1 but {message}")
        pytest.skip(message)
    return importlib.import_module(modules[0])
