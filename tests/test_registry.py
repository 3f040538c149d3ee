"""alldata.registry.Registry: eager and lazy entries, listing, did-you-mean, duplicates."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest

from alldata.errors import UnknownNameError
from alldata.registry import Registry


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """A throw-away importable module ``toy_plugin`` that registers ``toy`` in :data:`TOYS`."""
    (tmp_path / "toy_plugin.py").write_text(textwrap.dedent("""
        from tests.test_registry import TOYS

        @TOYS.register("toy")
        class Toy:
            pass

        class Other:
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "toy_plugin"
    sys.modules.pop("toy_plugin", None)


TOYS: Registry[type] = Registry("toy")


def test_register_get_names_and_listing():
    reg: Registry[int] = Registry("thing")
    assert reg.register("beta")(2) == 2
    reg.register("alpha")(1)
    assert reg.get("alpha") == 1 and reg.names() == ["alpha", "beta"] and list(reg) == ["alpha", "beta"]
    assert reg.list("a*") == ["alpha"] and reg.list() == ["alpha", "beta"] and reg.list("z*") == []
    assert "alpha" in reg and "gamma" not in reg and len(reg) == 2
    assert "2 names" in repr(reg)


def test_unknown_name_lists_allowed_values_and_close_matches():
    reg: Registry[int] = Registry("thing", lazy={"lazy_one": "collections:OrderedDict"})
    reg.register("alpha")(1)
    with pytest.raises(UnknownNameError, match=r"Unknown thing 'alpah'\. Registered: alpha, lazy_one\. Did you mean 'alpha'"):
        reg.get("alpah")
    with pytest.raises(UnknownNameError, match="Did you mean 'lazy_one'"):  # lazy names count without importing
        reg.get("lazy_on")
    with pytest.raises(KeyError) as e:
        reg.get("zzz")
    assert "Did you mean" not in str(e.value)
    with pytest.raises(UnknownNameError, match=r"Registered: \(none\)"):
        Registry("empty").get("x")


def test_lazy_module_attr_entry_imports_on_first_get_only():
    code = textwrap.dedent("""
        import sys
        from alldata.registry import Registry
        reg = Registry("codec", lazy={"json": "json.decoder:JSONDecoder"})
        sys.modules.pop("json.decoder", None); sys.modules.pop("json", None)
        print(reg.names(), reg.list("j*"), "json" in reg, len(reg), "json.decoder" in sys.modules)
        print(reg.get("json").__name__, "json.decoder" in sys.modules, reg.target("json"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["['json'] ['json'] True 1 False", "JSONDecoder True json.decoder:JSONDecoder"]


def test_lazy_entry_filled_by_the_modules_own_decorator(plugin_module):
    TOYS.register_lazy("toy", f"{plugin_module}:Toy")
    TOYS.register_lazy("other", f"{plugin_module}:Other")  # no decorator: taken by attribute
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # filling a lazy entry is not a duplicate
            toy = TOYS.get("toy")
        assert toy.__name__ == "Toy" and toy.__module__ == plugin_module
        assert TOYS.get("other").__name__ == "Other"
        TOYS.load_all()
    finally:
        TOYS._items.clear()
        TOYS._lazy.clear()


def test_module_only_lazy_entry(plugin_module):
    reg = TOYS
    reg.register_lazy("toy", plugin_module)
    try:
        assert reg.get("toy").__name__ == "Toy"
    finally:
        reg._items.clear()
        reg._lazy.clear()


def test_lazy_errors_name_the_module_and_the_fix():
    reg: Registry[type] = Registry("model", lazy={"gone": "no_such_pkg.mod:Thing", "noattr": "json:NoSuchThing"},
                                   install_hint="pip install 'alldata[gen]'")
    with pytest.raises(ImportError, match=r"cannot import no_such_pkg\.mod for model 'gone'.*pip install 'alldata\[gen\]'"):
        reg.get("gone")
    with pytest.raises(ImportError, match="defines no model 'noattr'"):
        reg.get("noattr")
    with pytest.raises(ValueError, match="is not 'package.module:attr'"):
        reg.register_lazy("bad", "not a module")


def test_duplicates_raise_unless_override_or_reloaded():
    reg: Registry[object] = Registry("thing")
    reg.register("alpha")(1)
    with pytest.raises(ValueError, match="already registered.*override=True"):
        reg.register("alpha")(2)
    reg.register("alpha")(1)  # the same object again: nothing to say
    with pytest.warns(UserWarning, match="'alpha' registered again"):
        reg.register("alpha", override=True)(3)
    assert reg.get("alpha") == 3

    def make():
        class Plugin:  # the same definition, re-executed (a reloaded module)
            pass

        return Plugin

    reg.register("plugin")(make())
    with pytest.warns(UserWarning, match="registered again"):
        reg.register("plugin")(make())

    reg.register_lazy("lz", "json:JSONDecoder")
    reg.register_lazy("lz", "json:JSONDecoder")  # identical declaration: fine
    with pytest.raises(ValueError, match="already registered"):
        reg.register_lazy("lz", "json:JSONEncoder")
    with pytest.raises(ValueError, match="already registered"):
        reg.register_lazy("alpha", "json:JSONEncoder")
    with pytest.warns(UserWarning):
        reg.register_lazy("lz", "json:JSONEncoder", override=True)
    assert reg.get("lz").__name__ == "JSONEncoder"


def test_the_project_registries_are_registry_instances():
    from alldata.models import CLASSIFIERS, SEGMENTERS
    from alldata.sources import SOURCES

    for reg in (SOURCES, SEGMENTERS, CLASSIFIERS):
        assert isinstance(reg, Registry) and reg.names()
    assert SEGMENTERS.target("unet") == "alldata.models.unet:UNet"
