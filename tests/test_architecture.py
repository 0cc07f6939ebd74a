"""The package's layering, read from the source with ``ast``: evaluation, demos and the
prediction API do not depend on training (``spin.train`` may import ``spin.predict``, never
the reverse).

Every ``import`` statement counts wherever it is, so an import inside a function (a "lazy"
one) is caught too; relative imports are resolved; ``importlib.import_module("...")`` and
``__import__("...")`` with a literal name count as imports.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "spin"
FORBIDDEN = "spin.train"
#: Packages that must not import spin.train, directly or through other modules.
INDEPENDENT = ("spin.eval", "spin.demo", "spin.predict")


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(name: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute module of ``from <level dots><name> import ...`` in ``importer``."""
    if level == 0:
        return name or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imported_names(source: str, importer: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` may import: ``import a.b`` -> ``a.b``; ``from a import b`` ->
    ``a`` and ``a.b`` (``b`` may be a submodule); at any depth of the tree."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node.module, node.level, importer, is_package)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def _forbidden(name: str) -> bool:
    return name == FORBIDDEN or name.startswith(FORBIDDEN + ".")


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports_of(name: str, path: Path) -> set[str]:
    return imported_names(path.read_text(), name, path.name == "__init__.py")


def _in(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_checker_sees_direct_lazy_and_relative_imports():
    lazy = "def f():\n    from spin.train.step import crop_pixels\n"
    assert any(_forbidden(n) for n in imported_names(lazy, "spin.eval.evaluate"))
    relative = "from ..train import checkpoint\n"
    assert "spin.train.checkpoint" in imported_names(relative, "spin.eval.evaluate")
    package = "from spin import train\n"
    assert "spin.train" in imported_names(package, "spin.demo")
    dynamic = "import importlib\nimportlib.import_module('spin.train.trainer')\n"
    assert "spin.train.trainer" in imported_names(dynamic, "spin.demo.pipeline")
    clean = "from spin.predict import load_predictor\nimport spin.training_data\n"
    assert not any(_forbidden(n) for n in imported_names(clean, "spin.eval.evaluate"))


@pytest.mark.parametrize("package", INDEPENDENT)
def test_no_module_imports_spin_train(package):
    """No module of spin/eval, spin/demo or spin/predict imports spin.train, at module level
    or inside a function."""
    modules = {n: p for n, p in package_modules().items() if _in(n, (package,))}
    assert modules, f"no modules found for {package}"
    offending = {
        name: sorted(n for n in _imports_of(name, path) if _forbidden(n))
        for name, path in modules.items()
    }
    offending = {name: found for name, found in offending.items() if found}
    assert not offending, f"{package} must not import {FORBIDDEN}: {offending}"


def test_nor_through_the_modules_they_import():
    """The same through every spin module they reach (importing a.b.c also runs the
    packages a and a.b)."""
    modules = package_modules()

    def edges(name: str) -> set[str]:
        found = set()
        for imported in _imports_of(name, modules[name]):
            parts = imported.split(".")
            for end in range(1, len(parts) + 1):  # the packages on the way run too
                prefix = ".".join(parts[:end])
                if prefix in modules or _forbidden(prefix):
                    found.add(prefix)
        return found

    start = [name for name in modules if _in(name, INDEPENDENT)]
    parent = {name: None for name in start}
    queue = deque(start)
    while queue:
        name = queue.popleft()
        for nxt in sorted(edges(name)):
            if nxt in parent:
                continue
            parent[nxt] = name
            if _forbidden(nxt):
                chain = [nxt]
                while parent[chain[-1]] is not None:
                    chain.append(parent[chain[-1]])
                pytest.fail(f"{' <- '.join(chain)}: {chain[-1]} reaches {FORBIDDEN}")
            queue.append(nxt)
