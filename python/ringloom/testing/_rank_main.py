"""One rank of ringloom.testing.run_in_ranks: loads the function named in the spec file,
calls it, and writes (ok, result or traceback) to rank{RANK}.pkl in the same folder.

    python -m ringloom.testing._rank_main WORK_DIR     (started by ringloom.launch)
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import sys
import traceback


def _load(spec: dict):
    for p in reversed(spec["sys_path"]):
        if p not in sys.path:
            sys.path.insert(0, p)
    try:
        obj = importlib.import_module(spec["module"])
    except ImportError:
        if not spec["source"]:
            raise
        # A test file that is not importable by its module name: load it from its path.
        mspec = importlib.util.spec_from_file_location(f"_ringloom_rank_{os.getpid()}", spec["source"])
        obj = importlib.util.module_from_spec(mspec)
        sys.modules[mspec.name] = obj
        mspec.loader.exec_module(obj)
    for part in spec["qualname"].split("."):
        obj = getattr(obj, part)
    return obj


def main(work: str) -> int:
    rank = int(os.environ.get("RANK", "0"))
    with open(os.path.join(work, "spec.pkl"), "rb") as f:
        spec = pickle.load(f)
    try:
        out = (True, _load(spec)(*spec["args"], **spec["kwargs"]))
        payload = pickle.dumps(out)
    except BaseException:  # the traceback goes to the caller, whatever it was
        payload = pickle.dumps((False, traceback.format_exc()))
    tmp = os.path.join(work, f"rank{rank}.pkl.tmp")
    with open(tmp, "wb") as f:
        f.write(payload)
    os.replace(tmp, os.path.join(work, f"rank{rank}.pkl"))
    return 0 if pickle.loads(payload)[0] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
