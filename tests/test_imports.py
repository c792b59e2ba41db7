"""The lcip package has no import cycles, and console scripts start without torch."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.paths import ROOT

PACKAGE = ROOT / "lcip"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """lcip modules a file imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in modules}
    return found


def test_no_import_cycles() -> None:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: _imports(p, set(files)) - {m} for m, p in files.items()}
    # a package's __init__ importing its own submodules is not a cycle of interest
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle = [*stack[stack.index(d) :], d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_cli_help_does_not_import_torch() -> None:
    code = "\n".join(
        [
            "import sys",
            "sys.argv = ['lcip-region', '--help']",
            "from lcip.cli import region",
            "try:",
            "    region()",
            "except SystemExit:",
            "    pass",
            "print('torch' in sys.modules)",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


def _package_of(module: str) -> str:
    """``lcip.io.raster`` -> ``lcip.io``; a top-level face (``lcip.errors``) is its own package."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_imports_another_packages_private_names() -> None:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    found = []
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                continue
            if not node.module.startswith("lcip") or _package_of(node.module) == _package_of(
                module
            ):
                continue
            private = [a.name for a in node.names if _private(a.name)]
            private += [p for p in node.module.split(".") if _private(p)]
            if private:
                found.append(f"{module} imports {private} from {node.module}")
    assert not found, "\n".join(found)


def test_top_level_holds_only_the_package_faces() -> None:
    faces = {"__init__.py", "errors.py", "classes.py", "config.py", "py.typed"}
    files = {p.name for p in PACKAGE.iterdir() if p.is_file()}
    assert files == faces
    for sub in (p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"):
        init = sub / "__init__.py"
        if sub.name in ("conf", "resources"):  # package data, not code
            assert not init.exists(), sub
            continue
        assert init.is_file(), f"{sub} has no __init__.py"
        if sub.name not in ("cli", "stages"):  # the console scripts' glue exports no API
            tree = ast.parse(init.read_text())
            names = [
                t.id
                for n in tree.body
                if isinstance(n, ast.Assign)
                for t in n.targets
                if isinstance(t, ast.Name)
            ]
            assert "__all__" in names, f"{init} has no __all__"


def test_tests_mirror_the_package() -> None:
    tests = PACKAGE.parent / "tests"
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    folders = {
        p.name for p in tests.iterdir() if p.is_dir() and p.name not in ("fixtures", "__pycache__")
    }
    assert folders - {"scripts"} <= packages, folders - packages
    for folder in folders:
        assert (tests / folder / "__init__.py").is_file(), folder
        assert list((tests / folder).glob("test_*.py")), f"tests/{folder} has no tests"
