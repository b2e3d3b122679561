"""QGIS 4 (Qt 6, PyQt6) readiness of the plugin's code, checked statically on every lane.

PyQt6 has only scoped enums (``Qt.AlignmentFlag.AlignLeft``, not ``Qt.AlignLeft``), no ``exec_`` and no
``QVariant.String``-style type names; QGIS 4 drops the old unscoped QGIS enum spellings. The scoped spellings work in
PyQt5 too, so the plugin uses them everywhere, except inside the one version guard for field types
(``processing_provider/fields.py``).

Every attribute chain in the plugin's modules that starts at a name imported from ``qgis.PyQt``, ``qgis.core`` or
``qgis.gui`` is resolved against the QGIS this lane runs, and an enum member reached through anything but its own
enum class is reported with the spelling to use.
"""

import ast
import enum
import os

import pytest
from headless import ROOT, package_script

# The one place allowed to name QVariant types: it picks QMetaType or QVariant by the running QGIS.
VERSION_GUARD = "processing_provider/fields.py"


def _plugin_modules():
    """The Python files the release zip ships (scripts/package.py decides), relative to the checkout."""
    return [path for path in package_script().package_files(ROOT) if path.endswith(".py")]


def _parse(relpath):
    with open(os.path.join(ROOT, relpath), encoding="utf-8") as handle:
        return ast.parse(handle.read(), filename=relpath)


def _imported_qgis_names(tree):
    """{local name: (module, name)} of every ``from qgis.PyQt... / qgis.core / qgis.gui import name``."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module.startswith("qgis.PyQt") or node.module in ("qgis.core", "qgis.gui")):
            for alias in node.names:
                names[alias.asname or alias.name] = (node.module, alias.name)
    return names


def _chain(node):
    """``['Qt', 'AlignmentFlag', 'AlignLeft']`` for the attribute expression ``Qt.AlignmentFlag.AlignLeft``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _is_enum_class(value):
    return isinstance(value, type) and (issubclass(value, enum.Enum) or type(value).__name__ == "enumtype")


def _unscoped(owner, member):
    """True when ``member`` (reached as an attribute of ``owner``) is an enum value and owner is not its enum."""
    kind = type(member)
    return (_is_enum_class(kind) and owner is not kind and isinstance(owner, type)
            and not isinstance(owner, enum.EnumMeta))


def _qgis_enum_name(kind):
    """'MessageLevel' when ``kind`` is ``Qgis.MessageLevel`` on this QGIS, else None."""
    from qgis.core import Qgis

    for name in dir(Qgis):
        if getattr(Qgis, name, None) is kind:
            return name
    return None


def _member_name(value, attribute):
    """The member's own name (a Python enum may be reached through an alias), else the attribute used."""
    return value.name if isinstance(value, enum.Enum) else attribute


def _enum_problems(relpath, tree):
    import importlib

    from qgis.core import Qgis

    imported = _imported_qgis_names(tree)
    problems = []
    seen = set()
    for node in ast.walk(tree):
        chain = _chain(node) if isinstance(node, ast.Attribute) else None
        if not chain or chain[0] not in imported or id(node) in seen:
            continue
        # Only the outermost attribute of a chain: inner nodes are walked too, mark them.
        inner = node.value
        while isinstance(inner, ast.Attribute):
            seen.add(id(inner))
            inner = inner.value
        module, name = imported[chain[0]]
        current = getattr(importlib.import_module(module), name, None)
        for depth, attribute in enumerate(chain[1:], start=1):
            owner, current = current, getattr(current, attribute, None)
            if current is None:
                break
            if _unscoped(owner, current):
                kind = type(current)
                qgis_enum = _qgis_enum_name(kind)
                spelled = ".".join(chain[:depth + 1])
                if qgis_enum is not None:
                    use = f"Qgis.{qgis_enum}.{_member_name(current, attribute)}"
                    if owner is Qgis or module != "qgis.core" or Qgis.QGIS_VERSION_INT < 33400:
                        problems.append(f"{relpath}:{node.lineno}: {spelled} -> {use}")
                    # From 3.34 on, most QGIS enums moved into Qgis: the Qgis spelling would not exist on 3.22, so
                    # the older lane is the judge of those.
                elif module.startswith("qgis.PyQt") or Qgis.QGIS_VERSION_INT < 33400:
                    problems.append(f"{relpath}:{node.lineno}: {spelled} -> "
                                    f"{'.'.join(chain[:depth])}.{kind.__name__}.{attribute}")
                break
    return problems


@pytest.fixture(scope="module")
def modules(qgis_app):
    return {relpath: _parse(relpath) for relpath in _plugin_modules()}


def test_the_plugin_code_is_scanned(modules):
    assert "processing_provider/provider.py" in modules and "ui/search_dock.py" in modules
    assert len(modules) > 30


def test_qt_and_qgis_enums_are_spelled_scoped(modules):
    problems = [problem for relpath, tree in modules.items() if relpath != VERSION_GUARD
                for problem in _enum_problems(relpath, tree)]
    assert not problems, "unscoped enum spellings (QGIS 4 / PyQt6 has only the scoped ones):\n" + "\n".join(problems)


def test_no_pyqt5_only_calls_or_imports(modules):
    problems = []
    for relpath, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("exec_", "print_"):
                problems.append(f"{relpath}:{node.lineno}: .{node.attr}() (PyQt6: .{node.attr[:-1]}())")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules_named = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
                for module in modules_named:
                    if module and module.split(".")[0] in ("PyQt5", "PyQt6", "sip"):
                        problems.append(f"{relpath}:{node.lineno}: import of {module} (use qgis.PyQt)")
    assert not problems, "\n".join(problems)


def test_qvariant_types_only_inside_the_version_guard(modules):
    from qgis.PyQt.QtCore import QVariant

    problems = []
    for relpath, tree in modules.items():
        if relpath == VERSION_GUARD:
            continue
        for node in ast.walk(tree):
            chain = _chain(node) if isinstance(node, ast.Attribute) else None
            if chain and chain[0] == "QVariant" and len(chain) > 1 and not callable(getattr(QVariant, chain[1], None)):
                problems.append(f"{relpath}:{node.lineno}: {'.'.join(chain)} (PyQt6's QVariant has no types: "
                                f"use {VERSION_GUARD})")
    assert not problems, "\n".join(problems)


def test_the_checks_catch_old_spellings(qgis_app):
    """The scanner itself: it reports the PyQt5-only forms a QGIS 3 plugin typically has."""
    source = ("from qgis.PyQt.QtCore import Qt\n"
              "from qgis.core import Qgis\n"
              "a = Qt.AlignLeft\n"
              "b = Qt.AlignmentFlag.AlignLeft\n"
              "c = Qgis.Warning\n"
              "d = Qgis.MessageLevel.Warning\n")
    problems = _enum_problems("sample.py", ast.parse(source))
    assert problems == ["sample.py:3: Qt.AlignLeft -> Qt.AlignmentFlag.AlignLeft",
                        "sample.py:5: Qgis.Warning -> Qgis.MessageLevel.Warning"]


def test_metadata_offers_the_plugin_to_qgis_4():
    import configparser

    parser = configparser.ConfigParser()
    parser.optionxform = str
    parser.read(os.path.join(ROOT, "metadata.txt"), encoding="utf-8")
    general = parser["general"]
    maximum = tuple(int(part) for part in general["qgisMaximumVersion"].split("."))
    assert maximum >= (4, 0) and maximum < (5, 0)
    assert general["supportsQt6"].strip().lower() in ("true", "yes")
