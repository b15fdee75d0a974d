"""Constructing Params wrongly raises ParameterError naming the bad name, the likely fix and the known names.

The cases are built from the real field names, so a new field is covered without editing this file.
"""

import copy
import dataclasses
import inspect
import pickle

import pytest

from sdrag import ParameterError, Params, SdragError
from sdrag.generation.params import ALIASES, ResolvedParams

NAMES = Params.names()
KNOWN = "Known: " + ", ".join(NAMES) + "."


def misspellings(name: str) -> list[str]:
    """Typos of `name`: a letter dropped, two swapped, one doubled, upper case, dashes for underscores."""
    mid = len(name) // 2
    variants = [name[:mid] + name[mid + 1:], name[:mid - 1] + name[mid] + name[mid - 1] + name[mid + 1:],
                name[:mid] + name[mid] + name[mid:], name.upper()]
    if "_" in name:
        variants.append(name.replace("_", "-"))
    return [v for v in dict.fromkeys(variants) if v != name and v not in NAMES]


TYPOS = [(typo, name) for name in NAMES for typo in misspellings(name)]


def refused(call) -> str:
    with pytest.raises(ParameterError) as err:
        call()
    assert type(err.value) is ParameterError and isinstance(err.value, (ValueError, SdragError))
    return str(err.value)


def test_the_cases_are_many_and_cover_every_field():
    assert len(TYPOS) >= 4 * len(NAMES) and {name for _, name in TYPOS} == set(NAMES)


@pytest.mark.parametrize("typo, name", TYPOS, ids=[t for t, _ in TYPOS])
def test_a_misspelt_name_is_refused_with_the_name_it_meant(typo, name):
    for call in (lambda: Params(**{typo: 1}), lambda: Params.from_dict({typo: 1}), lambda: Params().update(**{typo: 1}),
                 lambda: dataclasses.replace(Params(), **{typo: 1})):
        message = refused(call)
        assert message.startswith(f"Unknown parameter {typo!r}.") and f"Fix: did you mean {name!r}?" in message
        assert message.endswith(KNOWN)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_other_tools_names_point_at_ours(alias):
    message = refused(lambda: Params(**{alias: 7}))
    assert f"Unknown parameter {alias!r}. Fix: did you mean {ALIASES[alias]!r}?" in message and KNOWN in message


def test_the_readme_example():
    assert refused(lambda: Params(cfg=7)) == f"Unknown parameter 'cfg'. Fix: did you mean 'guidance'? {KNOWN}"


@pytest.mark.parametrize("key", ["zzzzzz", "", " ", "1", "__class__", "self", "params"])
def test_a_name_like_none_of_ours_is_named_without_a_guess(key):
    message = refused(lambda: Params(**{key: 1}))
    assert message == f"Unknown parameter {key!r}. Fix: drop or rename it. {KNOWN}"


@pytest.mark.parametrize("key, meant", [("negative prompt", "negative_prompt"), ("Steps", "steps"),
                                        ("steps ", "steps"), ("TOP-K", "top_k"), ("control start", "control_start"),
                                        ("prompt\x00", "prompt")])
def test_names_python_allows_only_through_a_dict_are_refused_too(key, meant):
    message = refused(lambda: Params(**{key: 1}))
    assert message.startswith(f"Unknown parameter {key!r}. Fix: did you mean {meant!r}?")


def test_several_unknown_names_are_all_named_in_the_order_given():
    message = refused(lambda: Params(stepz=3, zzz=1, cfg=2))
    assert message == (f"Unknown parameters 'stepz', 'zzz', 'cfg'. Fix: did you mean 'stepz' -> 'steps', "
                       f"'cfg' -> 'guidance'? Drop or rename the others. {KNOWN}")
    assert refused(lambda: Params(a1=1, b2=2)) == f"Unknown parameters 'a1', 'b2'. Fix: drop or rename them. {KNOWN}"


@pytest.mark.parametrize("extra", [1, 2, 5, 20])
def test_too_many_positional_values(extra):
    values = [getattr(Params(), n) for n in NAMES] + [0] * extra
    message = refused(lambda: Params(*values))
    assert message == (f"Params takes at most {len(NAMES)} values by position ({', '.join(NAMES)}), got "
                       f"{len(values)}. Fix: pass them by name, e.g. Params(prompt=..., steps=...).")


@pytest.mark.parametrize("n", range(1, 6))
def test_a_value_given_by_position_and_by_name(n):
    values = [getattr(Params(), name) for name in NAMES[:n]]
    message = refused(lambda: Params(*values, **{NAMES[n - 1]: values[-1]}))
    assert message == f"{NAMES[n - 1]!r} given both by position and by name. Fix: give each once."


def test_every_misuse_at_once_is_listed():
    with pytest.raises(ParameterError) as err:
        Params(*range(len(NAMES) + 1), prompt="x", cfg=1)
    assert len(err.value.problems) == 3 and str(err.value).startswith("Invalid parameters:\n  - ")
    assert all(p in str(err.value) for p in err.value.problems)
    assert "at most" in err.value.problems[0] and "'prompt' given both" in err.value.problems[1]
    assert "'cfg'" in err.value.problems[2] and KNOWN in err.value.problems[2]


@pytest.mark.parametrize("key", [1, None, 2.5, ("steps",), b"steps", True])
def test_keys_that_are_not_strings_are_named(key):
    # Python itself refuses them in Params(**{...}) ("keywords must be strings"): from_dict and update see them.
    with pytest.raises(TypeError, match="keywords must be strings"):
        Params(**{key: 1})
    message = refused(lambda: Params.from_dict({key: 1, "steps": 3}))
    assert message == f"Unknown parameter {key!r}. Fix: drop or rename it. {KNOWN}"
    mixed = refused(lambda: Params.from_dict({key: 1, "Stepz": 3}))  # unsortable together: still named
    assert f"{key!r}, 'Stepz'" in mixed and "'Stepz' -> 'steps'" in mixed


@pytest.mark.parametrize("data", [None, "steps=2", [("steps", 2)], 5, Params()], ids=repr)
def test_from_dict_takes_only_a_dict(data):
    message = refused(lambda: Params.from_dict(data))
    assert message.startswith(f"Params.from_dict takes a dict of parameters, got {type(data).__name__}. Fix:")


def test_valid_construction_is_unchanged():
    values = {"prompt": "p", "negative_prompt": "n", "steps": 3, "guidance": 2.0, "seed": [1, 2], "tags": ["t"]}
    by_name = Params(**values)
    assert Params(*[values.get(n, getattr(Params(), n)) for n in NAMES]) == by_name
    assert Params("p", "n", 3, guidance=2.0, seed=[1, 2], tags=["t"]) == by_name
    assert Params.from_dict(values) == by_name and Params().update(**values).resolved() == by_name.resolved()
    assert Params.from_dict(by_name.to_dict()).to_dict() == by_name.to_dict()
    assert dataclasses.replace(by_name, steps=4).steps == 4 and dataclasses.asdict(by_name)["seed"] == [1, 2]
    assert pickle.loads(pickle.dumps(by_name)) == by_name
    assert copy.copy(by_name) == by_name and copy.deepcopy(by_name) == by_name
    assert list(inspect.signature(Params).parameters) == NAMES
    assert [f.name for f in dataclasses.fields(Params)] == [f.name for f in dataclasses.fields(ResolvedParams)]
    resolved = by_name.resolved()
    assert resolved == pickle.loads(pickle.dumps(resolved))
    assert Params.from_dict(resolved.to_dict()).resolved() == resolved
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.steps = 5
