"""End-to-end runs of ``labeldistill learn-labels`` on tiny settings (scikit-learn digits, a few hundred images)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from labeldistill.cli import main
from labeldistill.data import load_dataset

ROW_KEYS = {"method", "n_base", "learner", "optimizer", "top1_mean", "top1_std", "repeats"}


@pytest.fixture(autouse=True)
def restore_threads():
    """The runs set ``threads: 1`` (tiny models gain nothing from threads); restore torch's setting after."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _write(path, cfg: dict):
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


TINY = {
    "name": "tiny", "threads": 1, "seed": 0,
    "data": {"target": "digits", "val_size": 200},
    "base": {"n": 20, "seed": 7},
    "learner": {"name": "mlp", "args": {"hidden": 32, "depth": 1}},
    "meta": {"epochs": 3, "outer_batch": 128, "inner_batch": 10, "val_every": 1, "max_steps": 60},
    "teacher": {"model": {"name": "mlp", "args": {"hidden": 64, "depth": 1}}, "epochs": 4, "batch_size": 64,
                "lr": 0.003, "temperature": 2.0},
    "metatest": {"repeats": 2, "optimizers": ["adam", "sgd_momentum"]},
    "plot_examples": 4,
}


def test_cli_within_dataset_writes_every_output(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = _write(tmp_path / "tiny.yaml", TINY)
    assert main(["learn-labels", cfg, f"run_dir={run}"]) == 0
    assert "| ld | 20 |" in capsys.readouterr().out

    tensors = load_file(str(run / "labels.safetensors"))
    manifest = json.loads((run / "labels.json").read_text())
    results = json.loads((run / "results.json").read_text())
    methods = ["ld", "rr", "onehot", "smooth", "teacher"]
    assert set(manifest["methods"]) == set(methods)
    for m in methods:
        y = tensors[m]
        assert y.shape == (20, 10), m
        assert (y >= 0).all(), m
        torch.testing.assert_close(y.sum(1), torch.ones(20), msg=m)
    for m in ("ld", "rr"):  # learned: moved away from the uniform initialisation
        assert not torch.allclose(tensors[m], torch.full((20, 10), 0.1)), m
        assert 1 <= manifest["methods"][m]["best_steps"] <= 60

    train = load_dataset("digits", "train")
    idx = tensors["base_indices"]
    assert idx.tolist() == manifest["base"]["indices"]
    assert torch.bincount(train.labels[idx], minlength=10).tolist() == [2] * 10
    assert torch.equal(tensors["base_images"], train.images[idx])
    assert torch.equal(tensors["onehot"].argmax(1), train.labels[idx])
    torch.testing.assert_close(tensors["smooth"].max(1).values, torch.full((20,), 0.91))
    assert manifest["seeds"] == {"seed": 0, "base_seed": 7, "split_seed": 0}
    assert manifest["source"]["dataset"] == "digits" and not manifest["cross_dataset"]

    rows = results["rows"]
    # 5 label sets on the mlp × 2 optimisers, plus rr/onehot/smooth/teacher on the RR learner × 2 optimisers.
    assert len(rows) == 5 * 2 + 4 * 2
    for r in rows:
        assert ROW_KEYS <= set(r)
        assert 0.0 <= r["top1_mean"] <= 1.0 and r["top1_std"] >= 0 and r["repeats"] == 2
        assert len(r["top1_all"]) == 2
    own = [r for r in rows if (r["method"], r["learner"], r["optimizer"]) in
           {("ld", "mlp", "adam"), ("rr", "rr+mlp", "adam")}]
    assert [r["step_rule"] for r in own] == ["meta-train", "meta-train"]
    assert all(r["step_rule"] == "val-search" for r in rows if r not in own)
    teacher = next(r for r in rows if r["method"] == "teacher" and r["learner"] == "mlp")
    assert teacher["top1_mean"] > 0.3  # far above chance (0.1): the pseudo-labels carry the teacher's knowledge
    assert "| rr | 20 | rr+mlp | adam" in (run / "report.md").read_text()
    assert (run / "labels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "teacher" / "teacher.json").is_file()

    # A second run reuses the saved teacher and, with the same seeds, reproduces the labels exactly.
    run2 = tmp_path / "run2"
    assert main(["learn-labels", cfg, f"run_dir={run2}", "methods=[ld, teacher]",
                 f"teacher.checkpoint={run / 'teacher'}", "metatest.optimizers=[adam]", "metatest.repeats=1"]) == 0
    again = load_file(str(run2 / "labels.safetensors"))
    assert torch.equal(again["ld"], tensors["ld"]) and torch.equal(again["teacher"], tensors["teacher"])
    assert json.loads((run2 / "results.json").read_text())["teacher"]["loaded_from"] == str(run / "teacher")

    # Meta-test only: reuse the first run's labels on another architecture; no meta-training happens.
    run3 = tmp_path / "run3"
    assert main(["learn-labels", cfg, f"run_dir={run3}", "methods=[ld, onehot]", f"labels_from={run}",
                 "metatest.archs=[{name: convnet, args: {width: 4, depth: 1, norm: none}}]",
                 "metatest.optimizers=[adam]", "metatest.repeats=1"]) == 0
    reused = json.loads((run3 / "results.json").read_text())
    assert reused["meta"] == {} and reused["labels_from"] == str(run)
    assert {(r["method"], r["learner"]) for r in reused["rows"]} == {
        ("ld", "mlp"), ("ld", "convnet"), ("onehot", "mlp"), ("onehot", "convnet")}
    ld_own = next(r for r in reused["rows"] if (r["method"], r["learner"]) == ("ld", "mlp"))
    assert ld_own["steps"] == manifest["methods"]["ld"]["best_steps"] and ld_own["step_rule"] == "meta-train"
    assert torch.equal(load_file(str(run3 / "labels.safetensors"))["ld"], tensors["ld"])


def test_cli_cross_dataset_digits28_to_fashion_mnist(tmp_path):
    cfg = dict(TINY, data={"target": "fashion-mnist", "source": "digits28", "val_size": 200, "target_subset": 400,
                           "test_subset": 300},
               base={"n": 15, "mode": "unbalanced", "seed": 3}, methods=["ld", "rr", "onehot"],
               meta=dict(TINY["meta"], epochs=2), metatest={"repeats": 1, "rr_learner": False})
    run = tmp_path / "x"
    assert main(["learn-labels", _write(tmp_path / "x.yaml", cfg), f"run_dir={run}"]) == 0
    manifest = json.loads((run / "labels.json").read_text())
    assert manifest["cross_dataset"] and manifest["source"]["dataset"] == "digits28"
    assert manifest["target"]["classes"][0] == "T-shirt_top" and manifest["shape"] == [15, 10]
    y = load_file(str(run / "labels.safetensors"))["ld"]
    assert (y >= 0).all() and torch.allclose(y.sum(1), torch.ones(15))
    results = json.loads((run / "results.json").read_text())
    assert {r["method"] for r in results["rows"]} == {"ld", "rr", "onehot"}
    assert results["sizes"] == {"target_train": 400, "val": 200, "test": 300}
    assert "Cross-dataset" in (run / "report.md").read_text()


@pytest.mark.parametrize("override, message", [
    ("base.n=25", "multiple of the 10 source classes"),
    ("methods=[ld, oracle]", "unknown method 'oracle'"),
    ("learner.name=vgg", "unknown model 'vgg'"),
    ("data.val_size=5000", "leaves no training images"),
    ("labels_from=/nonexistent/run", "no labels.json"),
])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, override, message):
    run = tmp_path / "bad"
    code = main(["learn-labels", _write(tmp_path / "tiny.yaml", TINY), f"run_dir={run}", override])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not run.exists()


def test_learn_labels_resumes_after_a_kill(tmp_path, capsys):
    """SIGKILL after the first learned label set, then after the third meta-test row: the re-run continues and
    its labels and test accuracies equal those of a run that was never interrupted.

    Only the two killed runs need a process of their own; the reference and the final resume run in this one
    (the same ``main``; each subprocess costs seconds of imports: torch, torch._dynamo, scikit-learn)."""
    import os
    import subprocess
    import sys

    small = {**TINY, "methods": ["ld", "rr", "onehot"], "metatest": {"repeats": 1, "optimizers": ["adam"]},
             "plot_examples": 0}
    cfg = _write(tmp_path / "tiny.yaml", small)

    def killed(run_dir, kill_at):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "LABELDISTILL_KILL_AT": kill_at}
        return subprocess.run([sys.executable, "-m", "labeldistill.cli", "learn-labels", cfg, f"run_dir={run_dir}"],
                              capture_output=True, text=True, env=env, timeout=600)

    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert main(["learn-labels", cfg, f"run_dir={ref}"]) == 0
    assert killed(cut, "meta-train:1").returncode == -9
    assert (cut / ".learn_labels.resume.pt").is_file() and not (cut / "results.json").exists()
    assert killed(cut, "metatest-row:3").returncode == -9  # resumes ld, learns rr, dies after 3 of the rows
    capsys.readouterr()
    assert main(["learn-labels", cfg, f"run_dir={cut}"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "2 label sets and 3 meta-test rows" in out
    assert not (cut / ".learn_labels.resume.pt").exists()
    a, b = load_file(str(ref / "labels.safetensors")), load_file(str(cut / "labels.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows_a = json.loads((ref / "results.json").read_text())["rows"]
    rows_b = json.loads((cut / "results.json").read_text())["rows"]
    assert [(r["method"], r["learner"], r["top1_all"]) for r in rows_a] == \
        [(r["method"], r["learner"], r["top1_all"]) for r in rows_b]
