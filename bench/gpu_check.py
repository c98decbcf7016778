"""GPU check of the label side (section ``gpu_check``): one command, at most 10 minutes on one GPU, nothing
downloaded, synthetic in-memory data. Checks: a. the test suite with CUDA visible; b. vectorised recover
throughput; c. relabel ÷ plain teacher forward; d. bf16 autocast on/off parity of recover, relabel and validate;
e. 224 px throughput; f. the dry run's time estimate ÷ actual; g. kill-and-resume identity; h. relabel under
torchrun vs one process; i. the Tiny-ImageNet config's dry run on a fake tree. ``--dry-run`` checks the plumbing
on the CPU with tiny sizes and writes nothing.

    bash bench/gpu_check.sh              # on a GPU machine
    bash bench/gpu_check.sh --dry-run    # anywhere
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.study import REPO, cli_env, command_line, machine, met as verdict, result_row, seed_run_from, today, write_section
from bench.time_estimate import estimate_and_run

from labeldistill.bnstats import class_stats
from labeldistill.config import load_config
from labeldistill.data import ImageSet, register_dataset
from labeldistill.labels.relabel import relabel
from labeldistill.models.checkpoint import load_teacher
from labeldistill.recover import recover
from labeldistill.runtime import autocast
from labeldistill.squeeze import squeeze
from labeldistill.validate import validate

DATASET = "gpu-check-templates"
AUTOCAST_NOTE = ("bf16 autocast is the config switch autocast: bf16 (default) | off; 'on' = the stage run with "
                 "autocast=bf16, 'off' = with autocast=off (recover, relabel and validate's training forward, on CUDA)")
RECOVER_TOP1_TOLERANCE = 0.05  # d1: |teacher top-1 on the recovered images, on − off|

FULL = {"classes": 50, "size": 32, "width": 64, "train_per_class": 100, "test_per_class": 20, "squeeze_epochs": 3,
        "timing_iterations": 100, "ipcs": (10, 50), "parity_ipc": 10, "parity_iterations": 300,
        "relabel_epochs": 20, "validate_epochs": 100, "big_classes": 100, "big_ipc": 2, "big_epochs": 5,
        "pytest": ["-q", "-x"], "pytest_timeout": 270, "tiny_per_class": 2}
TINY = {"classes": 4, "size": 16, "width": 8, "train_per_class": 8, "test_per_class": 4, "squeeze_epochs": 1,
        "timing_iterations": 2, "ipcs": (2, 3), "parity_ipc": 2, "parity_iterations": 3,
        "relabel_epochs": 2, "validate_epochs": 2, "big_classes": 3, "big_ipc": 1, "big_epochs": 1,
        "big_size": 32, "pytest": ["-q", "--collect-only"], "pytest_timeout": 60, "tiny_per_class": 1}


def register_templates(classes: int, train_per_class: int, test_per_class: int) -> None:
    """``gpu-check-templates``: one smooth random colour template per class + pixel noise (learnable, so
    top-1 means something); ``random`` images of any size with ``image_size``."""

    def templates(root, split, image_size=32):  # noqa: ARG001 - nothing is read from disk
        s = int(image_size or 32)
        base = torch.rand((classes, 3, 4, 4), generator=torch.Generator().manual_seed(7))
        base = torch.nn.functional.interpolate(base, size=(s, s), mode="bilinear", align_corners=False)
        per = train_per_class if split == "train" else test_per_class
        g = torch.Generator().manual_seed(1 if split == "train" else 2)
        labels = torch.arange(classes).repeat(per)
        x = base[labels] + 0.35 * torch.randn((len(labels), 3, s, s), generator=g)
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return ImageSet(images, labels, [f"c{i:03d}" for i in range(classes)], (0.5, 0.5, 0.5), (0.3, 0.3, 0.3))

    register_dataset(DATASET)(templates)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> tuple[float, object]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def base_overrides(run_dir: Path, sz: dict, device: str, size: int | None = None, model: str | None = None) -> list[str]:
    s = size or sz["size"]
    m = model or f"{{name: convnet, args: {{width: {sz['width']}, depth: 3}}}}"
    return [f"run_dir={run_dir}", "name=gpu_check", f"device={device}", "seed=0", f"data.dataset={DATASET}",
            f"data.image_size={s}", f"squeeze.model={m}", f"squeeze.epochs={sz['squeeze_epochs']}",
            "squeeze.batch_size=256", "recover.modes=[lpld]", "recover.batch_size=100", "relabel.batch_size=100",
            "relabel.steps_per_shard=200", "prune.factors=[1]", f"validate.model={m}", "validate.lr=0.005",
            "validate.eval_batch_size=500", "validate.checkpoint_seconds=100000"]


def clone_run(src: Path, dst: Path, cfg, parts: tuple[str, ...] = ()) -> None:
    """A new run directory (config ``cfg``) sharing the teacher, the class statistics and ``parts`` of ``src``."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    seed_run_from(src, dst, ["teacher", "class_stats", *parts], cfg)


def check_tests(sz: dict, dry: bool) -> dict:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": cli_env()["PYTHONPATH"]}
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", *sz["pytest"]], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=sz["pytest_timeout"])
        tail = (r.stdout.strip().splitlines() or [""])[-1]
        rc = r.returncode
    except subprocess.TimeoutExpired:
        tail, rc = f"timed out after {sz['pytest_timeout']} s", 124
    return {"rc": rc, "summary": tail, "seconds": time.perf_counter() - t0, "collect_only": dry}


def check_recover(base: Path, work: Path, sz: dict, device: torch.device) -> list[dict]:
    rows = []
    C = sz["classes"]
    for ipc in sz["ipcs"]:
        t = {}
        for v in (1, C):
            run = work / f"recover_ipc{ipc}_v{v}"
            cfg = config(run, sz, device, f"recover.ipc={ipc}", f"recover.iterations={sz['timing_iterations']}",
                         f"recover.vectorize={v}")
            clone_run(base, run, cfg)
            t[v], _ = timed(lambda: recover(cfg, "lpld", force=True), device)
        rows.append({"ipc": ipc, "classes": C, "seconds_v1": t[1], "seconds_vC": t[C], "ratio": t[1] / t[C]})
    return rows


def check_relabel(run: Path, sz: dict, device: torch.device) -> dict:
    cfg = config(run, sz, device, f"recover.ipc={sz['parity_ipc']}", f"relabel.epochs={sz['relabel_epochs']}")
    secs, store = timed(lambda: relabel(cfg, "lpld", force=True), device)
    n = store.manifest["num_entries"]
    teacher, _ = load_teacher(run / "teacher", device)
    shape = json.loads((run / "teacher" / "teacher.json").read_text())["shape"]
    x = torch.randn((min(n, 1024), *shape), device=device).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def plain() -> None:  # under the same autocast as the relabel stage (cfg.autocast, bf16 by default)
        left = n
        while left > 0:
            k = min(left, 1024)
            with autocast(device, cfg.autocast):
                out = teacher(x[:k])
            out.float().to(torch.float16).cpu()
            left -= k

    plain()  # warm-up
    p, _ = timed(plain, device)
    return {"entries": n, "relabel_seconds": secs, "plain_seconds": p, "ratio": secs / p}


def amp(on: bool) -> str:
    """The ``autocast`` override of one side of a parity pair."""
    return f"autocast={'bf16' if on else 'off'}"


def config(run: Path, sz: dict, device: torch.device, *extra: str):
    """The check's config of run directory ``run``, with ``extra`` overrides."""
    return load_config(None, base_overrides(run, sz, device.type) + list(extra))


def parity(sz: dict, *extra: str) -> list[str]:
    """The overrides of the parity chain (check d), then ``extra``."""
    return [f"recover.ipc={sz['parity_ipc']}", f"relabel.epochs={sz['relabel_epochs']}",
            f"validate.epochs={sz['validate_epochs']}", *extra]


def check_autocast(base: Path, work: Path, sz: dict, device: torch.device) -> dict:
    """The same recover → relabel → validate chain with the stages inside / outside a bf16 autocast context."""
    out: dict = {}
    for on in (False, True):
        run = work / f"parity_{'on' if on else 'off'}"
        cfg = config(run, sz, device, *parity(sz, f"recover.iterations={sz['parity_iterations']}",
                                               f"recover.vectorize={sz['classes']}", amp(on)))
        clone_run(base, run, cfg)
        recover(cfg, "lpld", force=True)
        out[f"recover_teacher_top1_{'on' if on else 'off'}"] = json.loads(
            (run / "images" / "lpld" / "images.json").read_text())["teacher_top1_on_images"]
    # relabel and validate on the same (autocast-off) images, so only the stage under test differs
    run_off, run_on = work / "parity_off", work / "parity_relabel_on"
    cfg_on = config(run_on, sz, device, *parity(sz, amp(True)))
    clone_run(run_off, run_on, cfg_on, ("images",))
    s_off = relabel(config(run_off, sz, device, *parity(sz, amp(False))), "lpld", force=True)
    s_on = relabel(cfg_on, "lpld", force=True)
    agree, maxdiff, k = 0, 0.0, 0
    for g in s_off.step_ids:
        a, b = s_off.get(g).logits.float(), s_on.get(g).logits.float()
        agree += int((a.argmax(1) == b.argmax(1)).sum())
        maxdiff = max(maxdiff, float((a - b).abs().max()))
        k += len(a)
    out.update(relabel_argmax_agreement=agree / k, relabel_max_abs_logit_diff=maxdiff)
    rows = {name: validate(config(run_off, sz, device, *parity(sz, f"seed={seed}", amp(on))), "lpld", 1.0,
                           store_path=s_off.path, force=True)["top1"]
            for name, on, seed in (("off", False, 0), ("off_seed1", False, 1), ("on", True, 0))}
    out.update({f"validate_top1_{k}": v for k, v in rows.items()})
    out["validate_noise"] = abs(rows["off"] - rows["off_seed1"])
    return out


def check_224(work: Path, sz: dict, device: torch.device) -> dict:
    s = sz.get("big_size", 224)
    run = work / "px224"
    shutil.rmtree(run, ignore_errors=True)
    model = "{name: resnet18, args: {stem: imagenet}}"
    ov = base_overrides(run, sz, device.type, size=s, model=model) + [
        "squeeze.epochs=0", "recover.modes=[random_real]", f"recover.ipc={sz['big_ipc']}",
        f"relabel.epochs={sz['big_epochs']}", f"validate.epochs={sz['big_epochs']}", "relabel.batch_size=100",
        "validate.eval_batch_size=100"]
    register_templates(sz["big_classes"], max(sz["big_ipc"], 2), 2)
    cfg = load_config(None, ov)
    squeeze(cfg)
    recover(cfg, "random_real")
    secs, store = timed(lambda: relabel(cfg, "random_real", force=True), device)
    entries = store.manifest["num_entries"]
    vsecs, row = timed(lambda: validate(cfg, "random_real", 1.0, store_path=store.path, force=True), device)
    return {"image_size": s, "classes": sz["big_classes"], "images": sz["big_classes"] * sz["big_ipc"],
            "entries": entries, "relabel_seconds": secs, "relabel_images_per_s": entries / secs,
            "validate_seconds": vsecs, "validate_train_seconds": row["seconds"], "validate_steps": row["steps"],
            "validate_images_per_s": sz["big_classes"] * sz["big_ipc"] * row["epochs"] / max(row["seconds"], 1e-9)}


def check_time_estimate(work: Path, sz: dict, device: torch.device) -> dict:
    """The dry run's time estimate ÷ the recorded stage seconds of a fresh small main job on ``device``."""
    from labeldistill.plan import timing

    if sz is TINY:  # the plumbing only: no half second of timing per probe
        timing.MIN_SECONDS = 0.0
    register_templates(sz["classes"], sz["train_per_class"], sz["test_per_class"])
    cfg = load_config(None, base_overrides(work / "time_estimate", sz, device.type) + [
        f"recover.ipc={sz['parity_ipc']}", f"recover.iterations={sz['timing_iterations']}",
        f"recover.vectorize={sz['classes']}", f"relabel.epochs={sz['relabel_epochs']}",
        f"validate.epochs={sz['relabel_epochs']}"])
    res = estimate_and_run(cfg)
    res["ratio"] = res["estimate_total"] / res["actual_total"]
    return res


# ---------------------------------------------------------------- g–i: CUDA correctness, in child processes


def child(sz: dict, verb: str, work: Path, run: Path, device: str, extra: list[str], kill_at: str | None = None,
          nproc: int = 0) -> int:
    """``labeldistill <verb>`` in a child process (under ``torchrun --nproc-per-node nproc`` when ``nproc``) that
    first registers this script's synthetic dataset (``--child``); returns its exit code (−9 when killed)."""
    cfgfile = work / "gpu_check.yaml"
    cfgfile.write_text("name: gpu_check\n")
    env = {**cli_env(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("LABELDISTILL_KILL_AT", None)
    if kill_at:
        env["LABELDISTILL_KILL_AT"] = kill_at
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
               "29531"] if nproc else [sys.executable])
    sizes = f"{sz['classes']},{sz['train_per_class']},{sz['test_per_class']}"
    args = [*launch, "-m", "bench.gpu_check", "--child", sizes, verb, str(cfgfile),
            *base_overrides(run, sz, device), *extra]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300).returncode


def tree_sha(folder: Path) -> dict[str, str]:
    """``{relative path: SHA-256}`` of every file under ``folder`` (empty when it does not exist)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def det_overrides(sz: dict) -> list[str]:
    """A small recover → relabel job with ``deterministic: true``: one class per group and one step per shard, so
    the kills of check g land inside each stage."""
    return ["deterministic=true", f"recover.ipc={sz['parity_ipc']}", f"recover.iterations={sz['parity_iterations']}",
            "recover.vectorize=1", f"relabel.epochs={sz['relabel_epochs']}", "relabel.steps_per_shard=1"]


def check_kill_resume(work: Path, sz: dict, device: torch.device) -> dict:
    """g: recover and relabel killed once each, run again, compared with an uninterrupted run (SHA-256)."""
    ref, killed = work / "det_ref", work / "det_killed"
    for d in (ref, killed):
        shutil.rmtree(d, ignore_errors=True)
    ex = det_overrides(sz)
    ref_cfg = config(ref, sz, device, *ex)
    squeeze(ref_cfg)  # in this process: the teacher and statistics are shared, not compared
    class_stats(ref_cfg)
    rcs = [child(sz, v, work, ref, device.type, ex) for v in ("recover", "relabel")]
    clone_run(ref, killed, config(killed, sz, device, *ex))
    out = {"reference_rc": rcs}
    for verb, point, part in (("recover", "recover-group:1", "images/lpld"), ("relabel", "relabel-shard:1",
                                                                             "labels/lpld/full")):
        out[f"{verb}_killed_rc"] = child(sz, verb, work, killed, device.type, ex, kill_at=point)
        out[f"{verb}_resume_rc"] = child(sz, verb, work, killed, device.type, ex)
        a, b = tree_sha(ref / part), tree_sha(killed / part)
        out[f"{verb}_files"] = len(a)
        out[f"{verb}_identical"] = bool(a) and a == b
    return out


def check_torchrun(work: Path, sz: dict, device: torch.device) -> dict:
    """h: relabel under torchrun vs the one-process store of check g (same teacher, statistics and images)."""
    ref, ddp = work / "det_ref", work / "det_torchrun"
    ex = det_overrides(sz)
    clone_run(ref, ddp, config(ddp, sz, device, *ex), ("images",))
    nproc = 2 if device.type == "cpu" or torch.cuda.device_count() >= 2 else 1
    rc = child(sz, "relabel", work, ddp, device.type, ex, nproc=nproc)
    a, b = tree_sha(ref / "labels/lpld/full"), tree_sha(ddp / "labels/lpld/full")
    return {"nproc": nproc, "backend": "nccl" if device.type == "cuda" else "gloo", "rc": rc, "files": len(a),
            "identical": bool(a) and a == b}


def fake_tiny_imagenet(root: Path, per_class: int) -> Path:
    """A Tiny-ImageNet-shaped ImageFolder tree: 200 wnid folders of ``per_class`` 64 px JPEGs in ``train/`` and
    ``val/`` (random pixels)."""
    from PIL import Image

    g = torch.Generator().manual_seed(3)
    for split in ("train", "val"):
        for c in range(200):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                px = torch.randint(0, 256, (64, 64, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(px).save(d / f"n{c:08d}_{i}.JPEG", quality=90)
    return root


def check_tiny_dry_run(work: Path, sz: dict, device: torch.device) -> dict:
    """i: ``labeldistill run configs/tiny_imagenet_lpld.yaml --dry-run`` on the fake tree (``--no-probe`` on the
    CPU dry run: the plumbing, not the timing)."""
    root = fake_tiny_imagenet(work / "tiny-imagenet-200", sz["tiny_per_class"])
    cmd = [sys.executable, "-m", "labeldistill.cli", "run", str(REPO / "configs" / "tiny_imagenet_lpld.yaml"),
           f"data.root={root}", f"run_dir={work / 'tiny_dry'}", f"device={device.type}", "data.workers=0",
           "--dry-run", "--json", *(["--no-probe"] if sz is TINY else [])]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    out = {"rc": r.returncode, "seconds": time.perf_counter() - t0, "error": r.stderr.strip()[-300:]}
    try:
        plan = json.loads(r.stdout)
    except ValueError:
        return out
    out["num_classes"], out["image_shape"] = plan.get("num_classes"), plan.get("image_shape")
    out["estimate_seconds"] = (plan.get("time") or {}).get("total_seconds")  # absent with --no-probe
    return out


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":  # a labeldistill command with the synthetic dataset
        register_templates(*map(int, sys.argv[2].split(",")))
        from labeldistill.cli import main as cli_main

        return cli_main(sys.argv[3:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU; write nothing to BENCHMARKS.md")
    ap.add_argument("--skip-tests", action="store_true", help="skip check (a)")
    ap.add_argument("--work", default=None, help="work folder (default runs/gpu_check, or a temp folder for --dry-run)")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    dry = args.dry_run
    if dry:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device visible; run with --dry-run to check the plumbing on the CPU",
              file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
    sz = TINY if dry else FULL
    import tempfile
    tmp = tempfile.mkdtemp(prefix="gpu_check_") if dry and args.work is None else None
    work = Path(args.work or tmp or REPO / "runs" / "gpu_check")
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    register_templates(sz["classes"], sz["train_per_class"], sz["test_per_class"])
    res: dict = {"device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                 "autocast_note": AUTOCAST_NOTE}
    print(f"gpu_check on {device}{' (dry run: tiny sizes, nothing written)' if dry else ''}", flush=True)
    print(f"note: {AUTOCAST_NOTE}", flush=True)
    if not args.skip_tests:
        print("a. test suite" + (" (collect only)" if dry else ""), flush=True)
        res["tests"] = check_tests(sz, dry)
        print(f"   rc={res['tests']['rc']}: {res['tests']['summary']}", flush=True)
    base = work / "base"
    shutil.rmtree(base, ignore_errors=True)
    cfg = config(base, sz, device)
    t_setup, _ = timed(lambda: (squeeze(cfg), class_stats(cfg)), device)
    res["setup_seconds"] = t_setup
    run_checks(res, base, work, sz, device)
    res["minutes"] = (time.time() - t_start) / 60
    body = report(res, sz, dry)
    print(body)
    (work / "gpu_check.json").write_text(json.dumps(res, indent=2, default=str))
    if dry:
        print("dry run: plumbing OK; nothing written to BENCHMARKS.md")
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        write_section(Path(args.out), "gpu_check", body, [result_row({"check": k}, result=v) for k, v in res.items()])
    tests_ok = args.skip_tests or res["tests"]["rc"] == 0
    return 0 if tests_ok else 1


def run_checks(res: dict, base: Path, work: Path, sz: dict, device: torch.device) -> None:
    """Checks b–i in order, each printed with a one-line summary; results into ``res``."""
    checks = [
        ("b. recover vectorize=C vs 1", "recover", lambda: check_recover(base, work, sz, device)),
        ("d. bf16 autocast parity", "autocast", lambda: check_autocast(base, work, sz, device)),
        ("c. relabel ÷ plain teacher inference", "relabel", lambda: check_relabel(work / "parity_off", sz, device)),
        ("e. 224 px relabel + validate throughput", "px224", lambda: check_224(work, sz, device)),
        ("f. time estimate ÷ actual", "time_estimate", lambda: check_time_estimate(work, sz, device)),
        ("g. kill-and-resume identity, deterministic: true", "kill_resume",
         lambda: check_kill_resume(work, sz, device)),
        ("h. relabel under torchrun vs one process, deterministic: true", "torchrun",
         lambda: check_torchrun(work, sz, device)),
        ("i. tiny_imagenet_lpld.yaml dry run on fake Tiny-ImageNet", "tiny_dry_run",
         lambda: check_tiny_dry_run(work, sz, device)),
    ]
    for title, key, check in checks:
        print(title, flush=True)
        res[key] = check()
        print("   " + summary(key, res[key]), flush=True)


def summary(key: str, r) -> str:
    """The line printed after a check."""
    if key == "recover":
        return "\n   ".join(f"IPC {x['ipc']}: {x['seconds_v1']:.2f} s vs {x['seconds_vC']:.2f} s → {x['ratio']:.2f}×"
                             for x in r)
    if key == "relabel":
        return f"{r['ratio']:.3f}"
    if key == "time_estimate":
        return f"{r['ratio']:.2f} (" + ", ".join(f"{x['stage']} {x['ratio']:.2f}" for x in r["rows"] if x["ratio"]) + ")"
    return json.dumps(r)


def report(res: dict, sz: dict, dry: bool) -> str:
    a = res["autocast"]
    rows = ["| check | result | target | | detail |", "|---|---|---|---|---|"]
    if dry:
        rows.append("| (dry run) | tiny sizes on the CPU: the verdicts below say nothing about a GPU | | | |")
    if "tests" in res:
        t = res["tests"]
        rows.append(f"| a. `python -m pytest {' '.join(sz['pytest'])}` with the device visible | exit {t['rc']}: "
                    f"{t['summary']} | exit 0 | {verdict(t['rc'] == 0)} | {t['seconds']:.0f} s; tests with "
                    "`device: auto` (fmnist_demo.yaml-based) run on the GPU, test_scale.py forces the CPU |")
    for r in res["recover"]:
        rows.append(f"| b. recover (lpld, class-wise) throughput at IPC {r['ipc']}, vectorize {r['classes']} ÷ 1 "
                    f"({r['classes']} classes, {sz['timing_iterations']} iterations) | {r['ratio']:.2f}× | ≥ 3× | "
                    f"{verdict(r['ratio'] >= 3)} | {r['seconds_v1']:.2f} s vs {r['seconds_vC']:.2f} s |")
    rl = res["relabel"]
    rows.append(f"| c. relabel stage ÷ plain teacher forward of as many images ({rl['entries']:,}) | "
                f"{rl['ratio']:.2f} | ≤ 1.15 | {verdict(rl['ratio'] <= 1.15)} | {rl['relabel_seconds']:.2f} s vs "
                f"{rl['plain_seconds']:.2f} s |")
    d1 = abs(a["recover_teacher_top1_on"] - a["recover_teacher_top1_off"])
    rows.append(f"| d1. recover, autocast on vs off: teacher top-1 on the recovered images | "
                f"{a['recover_teacher_top1_on']:.3f} vs {a['recover_teacher_top1_off']:.3f} | "
                f"within {RECOVER_TOP1_TOLERANCE:.2f} | {verdict(d1 <= RECOVER_TOP1_TOLERANCE)} | Δ {d1:.3f} |")
    rows.append(f"| d2. relabel, autocast on vs off (same images): stored-logit argmax agreement | "
                f"{a['relabel_argmax_agreement']:.4f} | ≈ 1 | {verdict(a['relabel_argmax_agreement'] >= 0.99)} | "
                f"max abs logit difference {a['relabel_max_abs_logit_diff']:.3f} |")
    d = abs(a["validate_top1_on"] - a["validate_top1_off"])
    rows.append(f"| d3. bf16 vs fp32 student top-1: validate, autocast on vs off (same store, seed 0) | "
                f"{a['validate_top1_on']:.3f} vs {a['validate_top1_off']:.3f} | within noise | "
                f"{verdict(d <= max(2 * a['validate_noise'], 0.01))} | noise: seed 1 off gives "
                f"{a['validate_top1_off_seed1']:.3f} (Δ {a['validate_noise']:.3f}) |")
    p = res["px224"]
    rows.append(f"| e. {p['image_size']} px relabel throughput (ResNet-18 teacher, {p['images']} images, "
                f"{p['entries']:,} entries) | {p['relabel_images_per_s']:,.0f} images/s | (report) | | "
                f"{p['relabel_seconds']:.2f} s |")
    rows.append(f"| e. {p['image_size']} px validate throughput (ResNet-18 student, {p['validate_steps']} steps of "
                f"≤ 100 images) | {p['validate_images_per_s']:,.0f} images/s | (report) | | train {p['validate_train_seconds']:.2f} s, "
                f"with evaluation {p['validate_seconds']:.2f} s |")
    te = res["time_estimate"]
    per = ", ".join(f"{r['stage']} {r['ratio']:.2f}" for r in te["rows"] if r["ratio"])
    rows.append(f"| f. dry-run time estimate ÷ recorded stage seconds, small main job (all stages) | {te['ratio']:.2f} | "
                f"0.7–1.3 | {verdict(0.7 <= te['ratio'] <= 1.3)} | {te['estimate_total']:.1f} s vs "
                f"{te['actual_total']:.1f} s; per stage: {per} |")
    rows += correctness_rows(res)
    head = ("## GPU check\n\n"
            f"Command: `bash bench/gpu_check.sh{' --dry-run' if dry else ''}` (runs `{command_line()}`)  \n"
            f"Date: {today()}  \nGPU: {res['gpu'] or 'none (dry run on the CPU)'}  \nMachine: {machine()}  \n"
            f"Setting: synthetic class-template images ({sz['classes']} classes, {sz['size']} px; registered "
            f"in-process, nothing downloaded), ConvNet-{sz['width']} teacher ({sz['squeeze_epochs']} squeeze epochs) "
            f"and student; whole check {res['minutes']:.1f} min.  \n"
            f"Note: {AUTOCAST_NOTE}.\n\n")
    return head + "\n".join(rows)


def correctness_rows(res: dict) -> list[str]:
    """Rows g–i of the table."""
    k, t, ti = res["kill_resume"], res["torchrun"], res["tiny_dry_run"]
    rows = []
    for verb, point in (("recover", "recover-group:1"), ("relabel", "relabel-shard:1")):
        ok = k[f"{verb}_identical"] and k[f"{verb}_killed_rc"] == -9 and k[f"{verb}_resume_rc"] == 0
        rows.append(f"| g. {verb} killed at `{point}` and run again (`deterministic: true`): SHA-256 of "
                    f"{k[f'{verb}_files']} files vs an uninterrupted run | "
                    f"{'identical' if k[f'{verb}_identical'] else 'differ'} | identical | {verdict(ok)} | "
                    f"exit codes: killed {k[f'{verb}_killed_rc']}, resumed {k[f'{verb}_resume_rc']}; "
                    f"reference {k['reference_rc']} |")
    rows.append(f"| h. relabel under torchrun ({t['backend']}, {t['nproc']} process{'es' if t['nproc'] > 1 else ''})"
                f" vs one process (`deterministic: true`): store SHA-256 ({t['files']} files) | "
                f"{'identical' if t['identical'] else 'differ'} | identical | {verdict(t['identical'] and t['rc'] == 0)}"
                f" | exit {t['rc']} |")
    est = ti.get("estimate_seconds")
    rows.append(f"| i. `configs/tiny_imagenet_lpld.yaml` `run --dry-run` on a fake 200-class 64 px tree | exit {ti['rc']}"
                f" | exit 0 | {verdict(ti['rc'] == 0)} | {ti['seconds']:.0f} s; estimated seconds: "
                f"{'– (no probe)' if est is None else f'{est:,.0f}'}; {ti.get('num_classes')} classes, image shape "
                f"{ti.get('image_shape')} {ti['error'] if ti['rc'] else ''}|")
    return rows


if __name__ == "__main__":
    sys.exit(main())
