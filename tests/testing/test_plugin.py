"""The pytest plugin as a user meets it: a ten-line regression test of their own config in
a fresh folder, run by a separate pytest; the markers skip with their reason; the
fixtures work; --ringloom-update-golden records, and a change to the model then fails."""
import os
import subprocess
import sys
import textwrap

import pytest

from ringloom.testing import child_env

USER_TEST = textwrap.dedent('''
    import os
    import pytest
    from ringloom.models import get_preset
    from ringloom.testing import golden_run

    def test_my_model_did_not_move():
        cfg = get_preset("tiny", n_layer=int(os.environ.get("MY_LAYERS", "2")), n_embd=32, vocab_size=50)
        golden_run(cfg, steps=4, seed=0, golden=os.path.join(os.path.dirname(__file__), "golden", "tiny.json"))
''')

FIXTURE_TEST = textwrap.dedent('''
    import pytest
    import ringloom as rl

    def test_devices(rl_device):
        t = rl.zeros([3], "float32", rl_device)
        assert t.device.startswith(rl_device.split(":")[0])

    def test_rng_is_seeded(rl_rng):
        assert rl_rng.integers(1 << 30) >= 0

    @pytest.mark.gpu
    def test_needs_gpu():
        assert rl.cuda_available()

    @pytest.mark.multiproc
    def test_needs_processes(rl_ranks):
        assert callable(rl_ranks)
''')


def run_pytest(folder, *args, **env):
    # -p names the plugin explicitly, as a source-tree run must; installed, the entry point
    # loads it under the same name, so it is not loaded twice.
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "ringloom.testing.plugin",
           str(folder), *args]
    return subprocess.run(cmd, cwd=folder, env=child_env(**env), capture_output=True, text=True, timeout=300)


def test_a_users_regression_test_from_zero(tmp_path):
    (tmp_path / "test_my_model.py").write_text(USER_TEST)
    first = run_pytest(tmp_path)
    assert first.returncode == 1 and "does not exist: run once with update=True" in first.stdout, first.stdout
    record = run_pytest(tmp_path, "--ringloom-update-golden")
    assert record.returncode == 0, record.stdout + record.stderr
    assert (tmp_path / "golden" / "tiny.json").exists()
    same = run_pytest(tmp_path)
    assert same.returncode == 0 and "1 passed" in same.stdout, same.stdout
    moved = run_pytest(tmp_path, MY_LAYERS="3")                 # the user's change to the model
    assert moved.returncode == 1, moved.stdout
    assert "was recorded for another config (n_layer: golden 2, this run 3)" in moved.stdout


def test_markers_and_fixtures(tmp_path):
    (tmp_path / "test_fixtures.py").write_text(FIXTURE_TEST)
    res = run_pytest(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    import ringloom
    if ringloom.cuda_available():
        assert "test_devices[cuda:0]" not in res.stdout or "passed" in res.stdout
    else:
        assert "GPU test: " in res.stdout                   # skipped, with the reason printed
    off = run_pytest(tmp_path, "--ringloom-no-multiproc")
    assert "multi-process test: --ringloom-no-multiproc given" in off.stdout, off.stdout


def test_rl_device_lists_cpu_and_each_gpu(tmp_path):
    (tmp_path / "test_fixtures.py").write_text(FIXTURE_TEST)
    res = run_pytest(tmp_path, "--collect-only", "-k", "test_devices")
    import ringloom
    expected = ["cpu"] + ([f"cuda:{i}" for i in range(ringloom.cuda_device_count())] if ringloom.cuda_available() else [])
    for dev in expected:
        assert f"test_devices[{dev}]" in res.stdout, res.stdout
    assert res.stdout.count("test_devices[") == len(expected)
