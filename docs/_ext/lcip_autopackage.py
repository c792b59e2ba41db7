"""``.. lcip-package:: lcip.<name>``: one lcip package's public API, for the API pages.

A package whose ``__init__`` declares ``__all__`` is documented through it: the classes and
functions it exports with ``automodule`` (wherever they are defined), then its constants with
``autodata``, so each object appears once, under its public name (``lcip.losses.QRLoss``). A
constant's ``#:`` comment is read from the module that defines it (autodoc looks only in the
package's ``__init__``); a value longer than :data:`MAX_VALUE` characters is not shown.

A package without ``__all__`` is documented module by module: every public submodule (name not
starting with ``_``) gets a section with its ``automodule``. New modules and new exports are
picked up without editing the pages.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from types import ModuleType
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

#: Longest value (its ``repr``) an exported constant's entry shows; longer ones show none.
MAX_VALUE = 120


def public_modules(package: str) -> list[str]:
    """The dotted names of a package's public submodules, sorted.

    Args:
        package: dotted name of the package, e.g. ``lcip.priors``.

    Returns:
        One name per submodule or subpackage whose name does not start with ``_``.
    """
    path = importlib.import_module(package).__path__
    return sorted(
        f"{package}.{info.name}"
        for info in pkgutil.iter_modules(path)
        if not info.name.startswith("_")
    )


def is_constant(value: object) -> bool:
    """Whether an exported value is documented with ``autodata`` (not a class or function)."""
    return not (inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value))


def package_lines(package: str) -> list[str]:
    """The reStructuredText that documents one package's public API.

    Args:
        package: dotted name of the package.

    Returns:
        The lines: for a package with ``__all__``, its ``automodule`` without the constants and
        one ``autodata`` per constant; for one without, its ``automodule`` and one titled
        section with an ``automodule`` per public submodule.
    """
    module = importlib.import_module(package)
    exported = getattr(module, "__all__", None)
    if exported is None:
        lines = [f".. automodule:: {package}", ""]
        for name in public_modules(package):
            lines += [name, "-" * len(name), "", f".. automodule:: {name}", ""]
        return lines
    constants = [name for name in exported if is_constant(getattr(module, name))]
    lines = [f".. automodule:: {package}"]
    if constants:
        lines.append(f"   :exclude-members: {', '.join(constants)}")
    lines.append("")
    for name in constants:
        lines.append(f".. autodata:: {package}.{name}")
        if len(repr(getattr(module, name))) > MAX_VALUE:
            lines.append("   :no-value:")
        lines.append("")
    return lines


def defining_comment(package: ModuleType, name: str, value: object) -> list[str] | None:
    """The ``#:`` comment of a constant a package exports, from the module that defines it.

    Args:
        package: the package (already imported).
        name: the constant's name in the package.
        value: its value (compared by identity with the submodules' attributes).

    Returns:
        The comment's lines, or None if neither the package nor a loaded submodule has one.
    """
    prefix = f"{package.__name__}."
    candidates = [package.__name__, *sorted(m for m in sys.modules if m.startswith(prefix))]
    for modname in candidates:
        if getattr(sys.modules[modname], name, None) is not value:
            continue
        comment = ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", name))
        if comment:
            return list(comment)
    return None


def constant_doc(
    app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    """``autodoc-process-docstring``: a re-exported constant's ``#:`` comment as its doc.

    Without it, autodoc shows nothing, or the docstring of the value's type (``dict``'s).
    """
    modname, _, attr = name.rpartition(".")
    package = sys.modules.get(modname)
    if what != "data" or package is None or attr not in getattr(package, "__all__", ()):
        return
    if not hasattr(package, "__path__"):
        return
    comment = defining_comment(package, attr, obj)
    lines[:] = [line.rstrip("\n") for line in comment] if comment else []


#: Entries whose docstring napoleon leaves alone: it would read the text before a first-line
#: colon as a type ("Chesapeake Land Cover, 4 classes: ..." -> "Type: Chesapeake ...").
PLAIN = ("attribute", "data", "property")
_plain: dict[str, list[str]] = {}


def save_plain(
    app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    """``autodoc-process-docstring``, before napoleon: remember a :data:`PLAIN` docstring."""
    if what in PLAIN:
        _plain[name] = list(lines)


def restore_plain(
    app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    """``autodoc-process-docstring``, after napoleon: put a :data:`PLAIN` docstring back."""
    if what in PLAIN and name in _plain:
        lines[:] = _plain.pop(name)


class PackageDirective(SphinxDirective):
    """Documents the package named by the directive's argument (see the module docstring)."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        """Parse the generated autodoc directives in place of this one."""
        source = self.get_source_info()[0]
        content = StringList(package_lines(self.arguments[0]), source=source)
        node = nodes.section()
        nested_parse_with_titles(self.state, content, node, content_offset=self.content_offset)
        return list(node.children)


def setup(app: Sphinx) -> dict[str, bool]:
    """Register the ``lcip-package`` directive and the docstring handlers."""
    app.add_directive("lcip-package", PackageDirective)
    app.connect("autodoc-process-docstring", constant_doc, priority=300)
    app.connect("autodoc-process-docstring", save_plain, priority=400)
    app.connect("autodoc-process-docstring", restore_plain, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
