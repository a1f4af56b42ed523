"""Every registered family conforms to the family contract (npformer/models/contract.py), and the
model layer has its classes."""

import types

import pytest

from npformer.models import classes
from npformer.models.base import PreTrainedModel
from npformer.models.contract import HOOKS, FamilySchema, TransformersSchema, contract_problems
from npformer.models.registry import FAMILIES


@pytest.mark.parametrize("name", FAMILIES)
def test_the_family_conforms_to_the_contract(name):
    family = FAMILIES[name]
    assert contract_problems(family) == []
    assert isinstance(family.schema, FamilySchema)
    assert isinstance(family.schema, TransformersSchema) == ("transformers" in family.recipes)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_family_has_its_model_classes(name):
    family = FAMILIES[name]
    assert name in classes.MODEL_MODULES
    for heads, architecture in family.schema.ARCHITECTURES.items():
        cls = classes.model_class(architecture)
        assert issubclass(cls, PreTrainedModel) and cls.family == name and cls.num_heads == heads
        cfg = family.config.variant(family.seeded_variant)
        assert cls.weight_schema(cfg, heads) == family.schema.weight_schema(cfg, heads)


def test_the_contract_names_its_hooks():
    assert len(HOOKS) == 11 and {"weight_schema", "traced_names", "config_from_tensors"} <= set(HOOKS)


def test_a_family_that_breaks_the_contract_is_named():
    family = FAMILIES["efficientformer"]
    broken = types.SimpleNamespace(**{k: v for k, v in vars(family.schema).items()
                                      if k not in ("traced_names", "SIGNATURE")})
    broken.weight_schema = lambda: {}  # takes no config
    problems = contract_problems(type(family)(**{**vars(family), "schema": broken}))
    assert any("schema.traced_names is missing" in p for p in problems)
    assert any("schema.SIGNATURE is missing" in p for p in problems)
    assert any("schema.weight_schema takes []" in p for p in problems)
    assert not isinstance(broken, FamilySchema)
