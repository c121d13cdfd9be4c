"""The shared name registry behind datasets, studies and training methods."""
from __future__ import annotations

import pytest

from spurlab.data.dataset_registry import DATASETS, load_splits
from spurlab.errors import SpurlabError, UnknownNameError
from spurlab.registry import Registry
from spurlab.studies.study_base import STUDIES
from spurlab.train.methods.method_base import METHODS


def test_unknown_name_lists_the_known_ones():
    registry = Registry("widget")
    registry.add("b", 1, origin="x")
    registry.add("a", 2, origin="x")
    with pytest.raises(UnknownNameError, match="unknown widget 'c'") as info:
        registry.get("c")
    assert info.value.known == ["a", "b"] and "known widgets: a, b" in str(info.value.hint)


def test_a_second_entry_under_one_name_is_refused_unless_replaced():
    registry = Registry("widget")
    first, second = object(), object()
    registry.add("w", first)
    registry.add("w", first)  # the same entry again is harmless
    with pytest.raises(RuntimeError, match="widget 'w' registered twice"):
        registry.add("w", second)
    registry.add("w", second, replace=True)
    assert registry.get("w") is second
    with pytest.raises(RuntimeError, match="non-empty name"):
        registry.add("", first)


def test_a_class_defined_again_replaces_the_old_definition():
    registry = Registry("widget")
    first = type("Widget", (), {"__module__": "somewhere"})
    again = type("Widget", (), {"__module__": "somewhere"})  # what a module reload produces
    other = type("Widget", (), {"__module__": "elsewhere"})
    registry.add("w", first)
    registry.add("w", again)
    assert registry.get("w") is again
    with pytest.raises(RuntimeError):
        registry.add("w", other)


def test_modules_are_imported_on_first_read_and_set_the_order(monkeypatch):
    registry = Registry("widget", ["fake_widgets_b", "fake_widgets_a"])
    registry.add("user-widget", 0, origin="user_code")
    imported = []

    def fake_import(module: str) -> None:  # a module that registers two entries when imported
        imported.append(module)
        for i in (1, 2):
            registry.add(f"{module}-{i}", object(), origin=module)

    monkeypatch.setattr("importlib.import_module", fake_import)
    assert registry.get("user-widget", load=False) == 0
    assert imported == []
    names = registry.names()
    assert imported[:2] == ["fake_widgets_b", "fake_widgets_a"]
    assert names == ["fake_widgets_b-1", "fake_widgets_b-2", "fake_widgets_a-1", "fake_widgets_a-2", "user-widget"]
    assert "fake_widgets_a-2" in registry and len(registry) == 5

    by_name = Registry("widget", order="name")
    for name in ("zeta", "alpha", "mid"):
        by_name.add(name, name)
    assert list(by_name) == ["alpha", "mid", "zeta"]


def test_the_three_project_registries_share_the_type():
    assert {DATASETS.kind, STUDIES.kind, METHODS.kind} == {"dataset", "study", "method"}
    assert "linear-skew" in DATASETS and "ood-failure-modes" in STUDIES and "groupdro" in METHODS
    assert METHODS.names()[:3] == ["erm", "reweight", "upsample"]  # built-ins in METHOD_MODULES order
    assert STUDIES.names() == sorted(STUDIES.names())


def test_plugins_named_in_the_environment_register_their_entries(tmp_path, monkeypatch):
    (tmp_path / "my_widgets.py").write_text("from tests_registry_target import REGISTRY\nREGISTRY.add('plugged', 42)\n")
    (tmp_path / "tests_registry_target.py").write_text(
        "from spurlab.registry import Registry\nREGISTRY = Registry('widget')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SPURLAB_PLUGINS", " my_widgets , ")
    from tests_registry_target import REGISTRY

    assert REGISTRY.get("plugged") == 42
    monkeypatch.setenv("SPURLAB_PLUGINS", "no_such_plugin_module")
    with pytest.raises(SpurlabError, match="cannot import spurlab plug-in 'no_such_plugin_module'"):
        Registry("widget").names()


def test_the_cli_sees_a_plugged_in_dataset(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from spurlab.cli import app

    (tmp_path / "my_data_plugin.py").write_text(
        "from spurlab.data import load_splits, register_dataset\n"
        "@register_dataset('my-plugged-data', 'a dataset from a plug-in', 'synthetic')\n"
        "def build(data_dir=None, seed=0):\n"
        "    return load_splits('linear-skew', data_dir, seed, n_maj=40, n_min=4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SPURLAB_PLUGINS", "my_data_plugin")
    for attr in ("_entries", "_origin"):  # the plug-in's entry goes when the test ends
        monkeypatch.setattr(DATASETS, attr, dict(getattr(DATASETS, attr)))
    monkeypatch.setattr(DATASETS, "_loaded", False)
    result = CliRunner().invoke(app, ["datasets", "list"])
    assert result.exit_code == 0 and "my-plugged-data" in result.output
    assert len(load_splits("my-plugged-data")["train"]) == 44


def test_declared_builtin_names_are_exactly_what_the_modules_register():
    from spurlab.studies.study_base import STUDIES, STUDY_NAMES
    from spurlab.train.methods.method_base import METHOD_NAMES, METHODS

    for registry, declared in ((STUDIES, STUDY_NAMES), (METHODS, METHOD_NAMES)):
        registry.load()
        origins = {n: registry._origin[n] for n in registry._entries}
        builtin = {n for n, o in origins.items() if any(o == m or o.startswith(m + ".") for m in registry.modules)}
        assert builtin == set(declared), registry.kind


def test_a_bad_name_is_refused_without_importing_the_modules(monkeypatch):
    from spurlab.registry import Registry

    registry = Registry("widget", ["spurlab_no_such_module_to_import"], builtin_names=["gear", "cog"])
    monkeypatch.delenv("SPURLAB_PLUGINS", raising=False)
    with pytest.raises(UnknownNameError, match="cog, gear|gear, cog"):
        registry.get("sprocket")  # would raise ModuleNotFoundError if the modules were imported
    with pytest.raises(ModuleNotFoundError):
        registry.get("gear")  # a built-in name loads the modules
