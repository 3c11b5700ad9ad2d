"""The package's structural rules (docs/architecture.md): small modules, short functions, no
reaching into another subpackage's private parts, one exception root, argparse in the CLI only.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import approxsim
from approxsim.errors import ApproxsimError

SRC = Path(approxsim.__file__).resolve().parent
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 120
#: Ports of torch's own long functions, kept line for line so they can be diffed with torch.
LONG_PORTS = {"multi_head_attention_forward"}


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _subpackage(module: str) -> str:
    """``approxsim.cim.chip`` → ``cim``; top-level modules are their own owner."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_file_over_limit() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in _sources()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    }
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


def test_no_function_over_limit() -> None:
    long = []
    for p in _sources():
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES and node.name not in LONG_PORTS:
                    long.append(f"{p.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _imports(tree: ast.Module, module: str) -> list[tuple[str, list[str]]]:
    """Every ``(imported module, [names])`` of a file, relative imports resolved."""
    out: list[tuple[str, list[str]]] = []
    package = module.rsplit(".", 1)[0] if not module.endswith("__init__") else module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((base, [a.name for a in node.names]))
    return out


def test_no_private_cross_subpackage_imports() -> None:
    bad = []
    for p in _sources():
        here = _module_name(p)
        if p.name == "__init__.py":
            here += ".__init__"
        owner = _subpackage(here)
        for target, names in _imports(ast.parse(p.read_text(encoding="utf-8")), here):
            parts = target.split(".")
            if parts[0] != "approxsim" or len(parts) < 2:
                continue
            theirs = _subpackage(target)
            if theirs == owner or (len(parts) == 2 and theirs.startswith("_")):
                continue  # own subpackage, or a shared top-level approxsim._helper module
            if any(part.startswith("_") for part in parts[1:]):
                bad.append(f"{p.relative_to(SRC)} imports private module {target}")
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    bad.append(f"{p.relative_to(SRC)} imports private name {target}.{name}")
    assert not bad, "\n".join(bad)


def test_argparse_only_in_cli() -> None:
    users = [
        str(p.relative_to(SRC))
        for p in _sources()
        if p.relative_to(SRC).parts[0] != "cli"
        and any(
            t == "argparse" for t, _ in _imports(ast.parse(p.read_text("utf-8")), _module_name(p))
        )
    ]
    assert not users, f"argparse imported outside approxsim.cli: {users}"


def _all_modules() -> list[str]:
    names = ["approxsim"]
    for info in pkgutil.walk_packages(approxsim.__path__, "approxsim."):
        names.append(info.name)
    return names


def test_every_exception_derives_from_approxsim_error() -> None:
    bad = []
    for name in _all_modules():
        if name == "approxsim.__main__":
            continue
        try:
            mod = importlib.import_module(name)
        except ImportError as exc:  # an optional extra (triton, gymnasium, ray) not installed
            pytest.skip(f"{name} needs an optional package: {exc}")
        for cls_name, cls in inspect.getmembers(mod, inspect.isclass):
            if (
                cls.__module__ == name
                and issubclass(cls, BaseException)
                and not issubclass(cls, ApproxsimError)
            ):
                bad.append(f"{name}.{cls_name}")
    assert not bad, f"exception classes outside the ApproxsimError tree: {bad}"
