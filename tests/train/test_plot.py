"""`ringloom plot RUN_DIR`: PNGs from metrics.jsonl, and a one-line error for a wrong dir."""
from __future__ import annotations

import pytest

from ringloom.cli import main
from ringloom.train.metrics import MetricsLogger

pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'ringloom[plot]')")

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_writes_pngs(tmp_path, rng, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with MetricsLogger(run) as log:
        for step in range(1, 40):
            log.log(step, float(5 * rng.uniform(0.9, 1.1) / step), tokens_per_s=float(rng.uniform(900, 1100)),
                    val_loss=0.5 if step % 10 == 0 else None, mfu=0.3)
    assert main(["plot", str(run), "--out", str(tmp_path / "pngs")]) == 0
    out = capsys.readouterr().out
    for name in ("loss.png", "throughput.png"):
        data = (tmp_path / "pngs" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
        assert f"wrote {tmp_path / 'pngs' / name}" in out


def test_plot_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.jsonl not found" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text("")
    assert main(["plot", str(tmp_path)]) == 2
    assert "holds no records" in capsys.readouterr().err
