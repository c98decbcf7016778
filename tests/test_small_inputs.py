"""Small inputs (8 × 8 digits): a convnet that pools them below 2 px, or a teacher crop padding or recover jitter
over 1/8 of the side, is named in one warning line each by ``run --dry-run`` and at the start of ``run``; the
digits config has none."""

from __future__ import annotations

from pathlib import Path

import pytest

from labeldistill import pipeline
from labeldistill.cli import main
from labeldistill.config import ModelConfig, load_config
from labeldistill.models.geometry import pooling_warning, small_input_warnings

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("side, depth, fit", [(8, 3, 2), (8, 4, 2), (4, 2, 1), (16, 4, 3)])
def test_pooling_below_two_pixels_names_the_depth_that_fits(side, depth, fit):
    msg = pooling_warning(ModelConfig("convnet", {"depth": depth}), side, "validate.model")
    assert msg is not None
    assert f"depth {depth} pools {side} px inputs to {side // 2 ** depth} px" in msg
    assert f"set validate.model.args.depth: {fit} " in msg
    assert side // 2 ** fit >= 2 and side // 2 ** (fit + 1) < 2  # the named depth is the deepest that fits


def test_no_pooling_warning_where_the_map_keeps_two_pixels():
    assert pooling_warning(ModelConfig("convnet", {"depth": 2}), 8, "squeeze.model") is None
    assert pooling_warning(ModelConfig("convnet", {"depth": 3}), 28, "squeeze.model") is None
    assert pooling_warning(ModelConfig("convnet", {}), 16, "squeeze.model") is None  # builder default depth 3
    assert pooling_warning(ModelConfig("convnet", {}), 15, "squeeze.model") is not None
    assert pooling_warning(ModelConfig("mlp", {}), 8, "squeeze.model") is None


def test_demo_config_on_digits_warns_for_teacher_student_and_padding():
    cfg = load_config(CONFIGS / "fmnist_demo.yaml", ["data.dataset=digits"])
    lines = small_input_warnings(cfg, (1, 8, 8))
    assert len(lines) == 4
    assert lines[0].startswith("squeeze.model: convnet depth 3 pools 8 px inputs to 1 px")
    assert lines[1].startswith("validate.model: convnet depth 3 pools 8 px inputs to 1 px")
    assert lines[2].startswith("squeeze.crop_padding: 2 px shifts 8 px images by up to 25 %")
    assert lines[3].startswith("recover.jitter: 2 px shifts 8 px images by up to 25 % of their side; set recover.jitter: 1")
    assert small_input_warnings(cfg, (1, 28, 28)) == []  # the demo's own Fashion-MNIST size
    real = load_config(CONFIGS / "fmnist_demo.yaml", ["data.dataset=digits", "recover.modes=[random_real]"])
    assert not any(w.startswith("recover.jitter") for w in small_input_warnings(real, (1, 8, 8)))  # no optimising


def test_dry_run_prints_the_warning(tmp_path, capsys):
    rc = main(["run", str(CONFIGS / "fmnist_demo.yaml"), "--dry-run", "--no-probe", "data.dataset=digits",
               f"run_dir={tmp_path / 'r'}"])
    out = capsys.readouterr().out
    assert rc in (None, 0)
    assert "  warning: squeeze.model: convnet depth 3 pools 8 px inputs to 1 px; set squeeze.model.args.depth: 2" in out
    assert "  warning: validate.model: convnet depth 3 pools 8 px" in out


def test_run_start_prints_the_warning_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "_run_one", lambda cfg, force, report=True: {"stopped": True})
    cfg = load_config(CONFIGS / "fmnist_demo.yaml", ["data.dataset=digits", f"run_dir={tmp_path / 'r'}"])
    assert pipeline.run(cfg) == {"stopped": True}
    err = capsys.readouterr().err
    assert "warning: squeeze.model: convnet depth 3 pools 8 px inputs to 1 px" in err
    assert "warning: squeeze.crop_padding: 2 px" in err


def test_digits_config_has_no_small_input_warning(tmp_path, capsys):
    rc = main(["run", str(CONFIGS / "digits_lpld.yaml"), "--dry-run", "--no-probe", f"run_dir={tmp_path / 'r'}"])
    out = capsys.readouterr().out
    assert rc in (None, 0)
    assert "images 1×8×8" in out and "warning:" not in out
