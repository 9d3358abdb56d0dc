"""The shipped type stubs (python/ringloom/_C/*.pyi) must describe the compiled module:
every public name bound in C++ is declared, and nothing stale is. Regenerate with
tools/gen-stubs after changing bindings."""
import ast
import os

import pytest

import ringloom
from ringloom import _C

STUB_DIR = os.path.join(os.path.dirname(ringloom.__file__), "_C")


def _declared(stub: str) -> set[str]:
    tree = ast.parse(open(stub).read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _stub_path(submodule: str) -> str:
    """ops -> _C/ops.pyi; a submodule with submodules of its own is a stub package."""
    parts = submodule.split(".") if submodule else []
    flat = os.path.join(STUB_DIR, *parts) + ".pyi" if parts else os.path.join(STUB_DIR, "__init__.pyi")
    return flat if os.path.exists(flat) else os.path.join(STUB_DIR, *parts, "__init__.pyi")


@pytest.mark.parametrize("submodule", ["", "ops", "layers", "comm", "comm.ipc"])
def test_stubs_match_the_extension(submodule):
    stub = _stub_path(submodule)
    assert os.path.exists(stub), f"missing stub {stub}: run tools/gen-stubs"
    mod = _C
    for part in filter(None, submodule.split(".")):
        mod = getattr(mod, part)
    bound = {n for n in dir(mod) if not n.startswith("_") and not isinstance(getattr(mod, n), type(_C))}
    declared = {n for n in _declared(stub) if not n.startswith("_")}
    assert bound - declared == set(), f"{stub} lacks {sorted(bound - declared)}: run tools/gen-stubs"
    assert declared - bound == set(), f"{stub} declares {sorted(declared - bound)} which the module lacks"
