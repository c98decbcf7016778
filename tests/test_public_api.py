"""The package root's public API (``labeldistill.__all__``): every name resolves, and the job-level calls refuse
bad input with the project's exceptions."""

from __future__ import annotations

import json

import pytest

import labeldistill
from conftest import REPO
from labeldistill.errors import ConfigError, LabelDistillError


def test_every_public_name_resolves_to_its_owner():
    for name in labeldistill.__all__:
        assert getattr(labeldistill, name) is not None, name
    from labeldistill.config import load_config
    from labeldistill.pipeline import run

    assert labeldistill.load_config is load_config and labeldistill.run is run
    assert labeldistill.STAGES == ("squeeze", "class-stats", "recover", "relabel", "prune", "validate")


def test_read_results_of_a_finished_and_an_unfinished_run(tmp_path):
    with pytest.raises(LabelDistillError, match="has not finished"):
        labeldistill.read_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"rows": [{"top1": 0.5}]}))
    assert labeldistill.read_results(tmp_path)["rows"] == [{"top1": 0.5}]


def test_run_stage_refuses_an_unknown_stage(tmp_path):
    cfg = labeldistill.load_config(REPO / "configs" / "fmnist_demo.yaml", [f"run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="unknown stage 'class_stats'"):
        labeldistill.run_stage(cfg, "class_stats")
    assert not any(tmp_path.iterdir())
