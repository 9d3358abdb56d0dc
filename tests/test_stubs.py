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


BINDINGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc", "bindings")


def test_every_build_binds_the_same_names():
    """The stubs fit every build the install can make (CPU only, CUDA without NCCL, CUDA with
    NCCL) only if no name is bound under a build flag: inside `#if(def) RINGLOOM_WITH_*`
    blocks of csrc/bindings/ nothing may be bound (a class without CUDA or NCCL is bound
    anyway and its constructor raises, like CudaGraph and NcclGroup)."""
    if not os.path.isdir(BINDINGS):
        pytest.skip("the C++ sources are not beside the tests (an installed copy)")
    binds = ("py::class_<", ".def(", ".def_property", ".def_static(", ".def_submodule(", "py::enum_<")
    bad = []
    for name in sorted(os.listdir(BINDINGS)):
        if not name.endswith(".cpp"):
            continue
        depth = 0  # nesting of build-flag blocks
        for no, line in enumerate(open(os.path.join(BINDINGS, name)), 1):
            s = line.strip()
            if s.startswith("#if"):
                depth += 1 if "RINGLOOM_WITH_" in s or depth else 0
            elif s.startswith("#endif") and depth:
                depth -= 1
            elif depth and any(b in s for b in binds):
                bad.append(f"{name}:{no}: {s}")
    assert not bad, "names bound only in some builds (bind them everywhere, raising where unsupported):\n" + \
        "\n".join(bad)


def test_nccl_group_refuses_in_builds_without_nccl():
    if _C.comm.has_nccl:
        pytest.skip("this build has NCCL")
    server = _C.comm.StoreServer("127.0.0.1", 0, "token")
    store = _C.comm.Store("127.0.0.1", server.port, "token", 0, 5.0)
    with pytest.raises(NotImplementedError, match="no NCCL backend"):
        _C.comm.NcclGroup(store, "world", 0, 1, 0, 5.0)
