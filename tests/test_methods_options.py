"""The light table of methods (``autopetl.methods.options``): every method's name, options and
backbone families without torch, the same as the registered methods say, and checked the same."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autopetl.errors import ConfigError, UnknownMethodError
from autopetl.methods.options import SPECS, method_names, method_options, method_spec
from autopetl.search.space import SpaceError, load_space


def test_the_light_table_and_the_registered_methods_agree_exactly() -> None:
    import autopetl.methods

    registered = autopetl.methods.METHODS
    assert method_names() == sorted(registered)
    for name, cls in registered.items():
        spec = method_spec(name)
        assert spec.name == cls.name == name
        assert spec.config_cls is cls.config_cls, name
        assert spec.families == cls.families, name


def test_a_method_that_disagrees_with_its_spec_is_not_registered() -> None:
    from autopetl.methods.bias import Bias
    from autopetl.methods.registry import METHODS, register_method

    with pytest.raises(ValueError, match=r"autopetl/methods/options/bias\.py says"):
        register_method(type("VitOnlyBias", (Bias,), {"families": ("vit",)}))
    with pytest.raises(ValueError, match="no options module"):
        register_method(type("Nameless", (Bias,), {"name": "nosuch"}))
    assert METHODS["bias"] is Bias and "nosuch" not in METHODS


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("nosuch", {}),
        ("vpt", {"nosuch": 1}),
        ("vpt", {"prompt_length": "ten"}),
        ("vpt", {"location": "add", "readout": "prompt_pool"}),
        ("lora", {"targets": "q,x"}),
        ("lora", {"rank": 10**9}),
        ("adapter", {"placement": "middle"}),
        ("bias", {"k": 1}),
    ],
)
def test_options_are_refused_in_the_registry_s_words(name: str, values: dict) -> None:
    from autopetl.methods import build_method

    with pytest.raises((UnknownMethodError, ConfigError)) as light:
        method_options(name, values)
    with pytest.raises((UnknownMethodError, ConfigError)) as heavy:
        build_method(name, values)
    assert type(light.value) is type(heavy.value)
    assert str(light.value) == str(heavy.value)


def test_options_build_the_config_the_method_takes() -> None:
    from autopetl.methods import build_method

    for name in method_names():
        assert method_options(name) == build_method(name).config
    config = method_options("lora", {"rank": 4, "targets": "q,v,o"})
    assert config == build_method("lora", {"rank": 4, "targets": "q,v,o"}).config
    assert config.to_dict() == {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": ["q", "v", "o"]}


def test_the_old_import_paths_give_the_same_classes() -> None:
    from autopetl.methods import MethodConfig as from_package
    from autopetl.methods.base import MethodConfig
    from autopetl.methods.lora import TARGETS, LoRAConfig
    from autopetl.methods.vpt import LOCATIONS, VPTConfig

    assert MethodConfig is from_package is SPECS["lora"].config_cls.__mro__[1]
    assert LoRAConfig is SPECS["lora"].config_cls and VPTConfig is SPECS["vpt"].config_cls
    assert "fc1" in TARGETS and LOCATIONS == ("prepend", "add")


_PROBE = """
import json, sys
{code}
print(json.dumps(sorted(m for m in ("torch", "timm", "ray", "optuna") if m in sys.modules)))
"""


def _heavy_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(code=code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_table_and_the_space_module_load_no_torch() -> None:
    code = "import autopetl.methods, autopetl.methods.options, autopetl.search.space"
    assert _heavy_after(code) == []


@pytest.mark.parametrize(
    "methods",
    [
        "nosuch: {}",  # an unknown method
        "vpt: {nosuch: 1}",  # an unknown option
        "lora: {rank: {type: int, low: 0, high: 8}}",  # a value the method refuses
    ],
)
def test_a_space_with_a_bad_method_is_refused_without_torch(tmp_path, methods: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"methods:\n  {methods}\ntrain:\n  lr: 0.001\n")
    with pytest.raises(SpaceError, match=r"methods\."):
        load_space(path)
    code = f"""
from autopetl.search.space import SpaceError, load_space
try:
    load_space({str(path)!r})
except SpaceError:
    pass
else:
    raise SystemExit("accepted")
"""
    assert _heavy_after(code) == []
