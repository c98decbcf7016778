"""learn-labels on one's own data (issue 20 item 8): the main job's data keys, cross-dataset resizing, --dry-run,
--force, an ImageFolder without a test split, and a teacher checkpoint trained elsewhere. Tiny settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from labeldistill.cli import main
from labeldistill.data import load_dataset
from labeldistill.data.loading import resize_images
from labeldistill.learn_labels.config import load_ld_config
from labeldistill.learn_labels.learners import build_network
from labeldistill.learn_labels.run import prepare_task

QUICK = {
    "name": "q", "threads": 1, "seed": 0, "methods": ["onehot"],
    "data": {"target": "digits", "val_size": 100, "target_subset": 200, "test_subset": 100},
    "base": {"n": 10, "seed": 1},
    "learner": {"name": "mlp", "args": {"hidden": 16, "depth": 1}},
    "meta": {"epochs": 1, "outer_batch": 64, "inner_batch": 5, "val_every": 1, "max_steps": 5},
    "teacher": {"model": {"name": "mlp", "args": {"hidden": 16, "depth": 1}}, "epochs": 1, "batch_size": 64},
    "metatest": {"repeats": 1, "optimizers": ["adam"], "rr_learner": False},
    "plot_examples": 0,
}


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _cfg(tmp_path, **changes) -> str:
    f = tmp_path / "ll.yaml"
    f.write_text(yaml.safe_dump({**QUICK, **changes}))
    return str(f)


def _one_line(capsys, argv, expect) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln.split("\r")[-1] for ln in err.strip().splitlines() if "labeldistill: error:" in ln]
    assert code == 2 and len(lines) == 1 and expect in lines[0] and "Traceback" not in err, err


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = _cfg(tmp_path, methods=["ld", "teacher"])
    assert main(["learn-labels", cfg, f"run_dir={run}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "(to do); nothing is written" in out
    assert "base examples: 10 balanced of 1437 digits train images" in out
    assert "target: digits at 1x8x8" in out and "200 outer-loss + 100 validation" in out and "test: 100" in out
    assert "teacher: train mlp for 1 epochs (3 Adam steps)" in out  # 200 // 64 = 3 steps per epoch
    assert "meta-train ld: 1 epochs = 4 outer steps" in out and "would write: labels.safetensors" in out
    assert not run.exists()


def test_finished_run_is_skipped_refused_when_stale_and_redone_with_force(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = _cfg(tmp_path)
    assert main(["learn-labels", cfg, f"run_dir={run}"]) == 0
    first = json.loads((run / "results.json").read_text())
    base = load_file(str(run / "labels.safetensors"))["base_indices"]
    assert first["settings_key"]
    capsys.readouterr()
    assert main(["learn-labels", cfg, f"run_dir={run}"]) == 0  # same settings: nothing recomputed
    assert "already holds this run" in capsys.readouterr().out
    assert json.loads((run / "results.json").read_text()) == first
    assert main(["learn-labels", cfg, f"run_dir={run}", "--dry-run", "base.seed=2"]) == 0
    assert "finished with other settings (base.seed: 1 → 2)" in capsys.readouterr().out
    _one_line(capsys, ["learn-labels", cfg, f"run_dir={run}", "base.seed=2"], "base.seed: 1 → 2")
    assert json.loads((run / "results.json").read_text()) == first  # the refused run touched nothing
    assert main(["learn-labels", cfg, f"run_dir={run}", "base.seed=2", "--force"]) == 0
    redone = load_file(str(run / "labels.safetensors"))["base_indices"]
    assert not torch.equal(redone, base) and json.loads((run / "labels.json").read_text())["base"]["seed"] == 2


def _folder(root, splits=("train",), n=6, size=10):
    rng = np.random.default_rng(0)
    for split in splits:
        for c in ("cat", "dog"):
            d = (root / split if split else root) / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_imagefolder_without_test_split_is_refused_unless_held_out(tmp_path, capsys):
    root = _folder(tmp_path / "own", splits=("",), n=8)  # class folders directly under root: no test/ or val/
    data = {"target": "imagefolder", "target_root": str(root), "val_size": 4}
    cfg = _cfg(tmp_path, data=data, base={"n": 2, "seed": 0}, meta={**QUICK["meta"], "inner_batch": 2})
    _one_line(capsys, ["learn-labels", cfg, f"run_dir={tmp_path / 'r'}"], "has no test/ or val/ folder")
    assert not (tmp_path / "r").exists()
    cfg = _cfg(tmp_path, data={**data, "test_holdout": 4, "image_size": 8}, base={"n": 2, "seed": 0},
               meta={**QUICK["meta"], "inner_batch": 2})
    c = load_ld_config(cfg, [f"run_dir={tmp_path / 'r'}"])
    task = prepare_task(c, torch.device("cpu"))
    assert task.x_test.shape == (4, 1, 8, 8) and task.train_size == 12  # 16 images, 4 held out as the test split
    assert torch.bincount(task.y_test.cpu()).tolist() == [2, 2]
    assert main(["learn-labels", cfg, f"run_dir={tmp_path / 'r'}"]) == 0
    assert json.loads((tmp_path / "r" / "results.json").read_text())["sizes"]["test"] == 4


def test_cross_dataset_resizes_both_datasets_to_image_size(tmp_path):
    """digits28 base examples (28 px) for an ImageFolder target at 10 px: both loaded at data.image_size=16."""
    root = _folder(tmp_path / "own", splits=("train", "val"), n=10, size=10)
    over = ["data.target=imagefolder", f"data.target_root={root}", "data.source=digits28", "data.val_size=4",
            "data.image_size=16", "base.mode=unbalanced", "base.n=6", "meta.inner_batch=3", "methods=[onehot]",
            "data.mean=[0.5]", "data.std=[0.25]", "data.target_subset=null", "data.test_subset=null"]
    task = prepare_task(load_ld_config(_cfg(tmp_path), over), torch.device("cpu"))
    assert task.x_base.shape == (6, 1, 16, 16) and task.x_target.shape[1:] == (1, 16, 16)
    assert task.mean == (0.5,) and task.std == (0.25,)
    src = load_dataset("digits28", "train")
    want = resize_images(src.images[task.base_indices], 16)
    torch.testing.assert_close(task.x_base, (want.float() / 255 - 0.5) / 0.25)
    with pytest.raises(Exception, match="set data.image_size"):
        prepare_task(load_ld_config(_cfg(tmp_path), [o for o in over if "image_size" not in o]), torch.device("cpu"))


def test_teacher_state_dict_trained_elsewhere(tmp_path, capsys):
    """A plain state_dict (here: DDP-prefixed, under 'model', as torch.save writes it) for teacher.model."""
    c = load_ld_config(_cfg(tmp_path), [])
    torch.manual_seed(3)
    net = build_network(c.teacher.model, 10, (1, 8, 8), torch.device("cpu"))
    ck = tmp_path / "elsewhere.pth"
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 9}, ck)
    cfg = _cfg(tmp_path, methods=["teacher"])
    run = tmp_path / "run"
    _one_line(capsys, ["learn-labels", cfg, f"run_dir={run}", f"teacher.checkpoint={ck}"], "teacher.unknown_split=true")
    assert not run.exists()
    assert main(["learn-labels", cfg, f"run_dir={run}", f"teacher.checkpoint={ck}", "teacher.unknown_split=true"]) == 0
    teacher = json.loads((run / "results.json").read_text())["teacher"]
    assert teacher["loaded_from"] == str(ck) and teacher["split_checked"] is False
    assert not (run / "teacher").exists()  # nothing trained
    task = prepare_task(load_ld_config(cfg, [f"run_dir={run}"]), torch.device("cpu"))
    with torch.no_grad():
        want = torch.softmax(net.eval()(task.x_base) / c.teacher.temperature, 1)
    torch.testing.assert_close(load_file(str(run / "labels.safetensors"))["teacher"], want)
    wrong = tmp_path / "wrong.pth"
    torch.save(build_network(c.teacher.model, 3, (1, 8, 8), torch.device("cpu")).state_dict(), wrong)
    _one_line(capsys, ["learn-labels", cfg, f"run_dir={tmp_path / 'w'}", f"teacher.checkpoint={wrong}",
                       "teacher.unknown_split=true", "--dry-run"], "does not fit model 'mlp'")
