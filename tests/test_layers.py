"""Imports flow one way: probmod <- probcirc's engine <- its applications <- sparsecoding, amortized.

The rule is read from the source with ``ast``: every ``import``/``from ... import`` anywhere in a
module (inside functions too: a lazy import is still a dependency), relative imports resolved, and
``importlib.import_module("...")`` calls with a literal name. docs/architecture.md explains the rule.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ("compile", "layers", "kernels", "queries", "nodes", "inputs", "learn", "structures")
APPLICATIONS = ("probcirc.compress", "probcirc.colep")

#: (which modules, what they must never import, why)
RULES = [
    ("probmod", ("probcirc", "sparsecoding", "amortized"), "the core imports no package built on it"),
    ("probcirc", ("sparsecoding", "amortized"), "probcirc never imports the packages built on it"),
    *[(f"probcirc.{sub}", APPLICATIONS, "the engine never imports an application") for sub in ENGINE],
]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute names of every module that ``source`` (the text of ``module``) imports."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from probcirc import compress` imports probcirc.compress
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def is_within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(root: Path = ROOT) -> list[str]:
    """Every import that breaks a rule in :data:`RULES`, as ``module imports name (why)``."""
    found = []
    for top in ("probmod", "probcirc", "sparsecoding", "amortized"):
        for path in sorted((root / top).rglob("*.py")):
            module = module_name(path, root)
            names = imported_modules(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
            for scope, banned, why in RULES:
                if not is_within(module, scope):
                    continue
                found += [
                    f"{module} imports {n} ({why})" for n in sorted(names) if any(is_within(n, b) for b in banned)
                ]
    return found


def test_imports_flow_one_way():
    assert violations() == []


def test_the_rules_see_every_package():
    # A rule over a folder that moved away would pass vacuously.
    for scope, _, _ in RULES:
        assert (ROOT / scope.replace(".", "/")).is_dir(), scope
        assert any((ROOT / scope.replace(".", "/")).rglob("*.py")), scope


@pytest.mark.parametrize(
    ("module", "source", "banned"),
    [
        ("probmod.io", "import probcirc.gmm", "probcirc.gmm"),
        ("probmod.io", "def f():\n    from probcirc import GaussianMixture", "probcirc.GaussianMixture"),
        ("probcirc.queries.marginal", "from ..compress import codec", "probcirc.compress.codec"),
        ("probcirc.layers", "from ..colep.knowledge import Knowledge", "probcirc.colep.knowledge"),
        ("probcirc.gmm", "import importlib\nimportlib.import_module('amortized.tasks')", "amortized.tasks"),
    ],
)
def test_a_planted_upward_import_is_caught(tmp_path, module, source, banned):
    parts = module.split(".")
    for top in ("probmod", "probcirc", "sparsecoding", "amortized"):
        (tmp_path / top).mkdir()
    (tmp_path / Path(*parts[:-1])).mkdir(parents=True, exist_ok=True)
    is_package = module == "probcirc.layers"
    target = tmp_path / Path(*parts) / "__init__.py" if is_package else tmp_path / Path(*parts[:-1]) / f"{parts[-1]}.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source + "\n", encoding="utf-8")
    found = violations(tmp_path)
    assert found and all(f.startswith(f"{module} imports ") for f in found), found
    assert any(f.startswith(f"{module} imports {banned} ") for f in found), found


def test_relative_imports_resolve():
    assert imported_modules("from . import x", "probcirc.queries.marginal") >= {"probcirc.queries.x"}
    assert imported_modules("from . import x", "probcirc.queries", is_package=True) >= {"probcirc.queries.x"}
    assert imported_modules("from ...probmod import io", "probcirc.queries.marginal") >= {"probmod.io"}
