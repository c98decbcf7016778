"""The dry run's time estimate: a few real steps of every stage, timed here, times the plan's step counts.

**What is timed.** On the configured device (``device``), with the config's ``threads`` applied as the
``labeldistill`` command applies them (:func:`labeldistill.runtime.set_threads`) and under its ``autocast``,
on models with random weights and random uint8 images of the configured shape ``(C, H, W)``:

* squeeze: one training step of the teacher at ``squeeze.batch_size`` images: the stage's augmentation
  (:func:`labeldistill.squeeze.train_augmentation`), normalisation, forward, cross-entropy and SGD step
  (:func:`labeldistill.training.optimizer_step`);
* evaluation (squeeze's teacher; each student of validate and hard-label): a no-grad forward with
  normalisation and argmax of a batch of ``min(batch size, EVAL_PIXELS / (H · W))`` images, per image;
* class-stats: the teacher's eval forward of an augmented batch of ``class_stats.batch_size`` images (capped
  as evaluation), per image;
* recover, modes that optimise images: iterations of :func:`labeldistill.recover.recover_segments` on the
  mode's first batch group (``recover.vectorize`` batches of ``recover.batch_size``; random BN targets), per
  iteration; every mode also counts the teacher's top-1 check of its images (an eval forward per image) and
  rded / own image sets their teacher forwards, at the evaluation rate;
* relabel: :func:`labeldistill.labels.relabel.generate_steps` at ``relabel.batch_size``: crop, flip and CutMix
  sampled and applied by :func:`labeldistill.labels.replay.build_batch`, the teacher forward in relabel's own
  chunks, fp16 logits; per image;
* validate, per student: one training step as validate takes it: replay of a stored step (``build_batch``),
  soft targets from fp16 logits, forward, :func:`labeldistill.validate.student_loss`, optimiser step;
* hard-label: validate's per-step rate of the same student (cross-entropy and kornia augmentation instead of
  replay and a soft loss: close, not the same).

Each probe runs ``WARMUP_CALLS`` untimed calls, then timed calls until it has made ``MIN_CALLS`` and spent
``MIN_SECONDS`` (at most ``MAX_CALLS``), measured with :func:`time.perf_counter` after
:func:`torch.cuda.synchronize` on CUDA; the rate is the mean of the timed calls.

**How it is extrapolated.** A stage's seconds = its planned steps × seconds per step (squeeze, recover,
validate, hard-label) or its planned images × seconds per image (class-stats, relabel), + one evaluation pass
of the test split per trained model (squeeze, every validate and hard-label run). A stage whose output is done
counts 0 s; a stale one counts in full (``--force`` redoes it). The total is the sum of the stages.

**What is NOT counted.** Reading and decoding data from disk (a lazy ImageFolder's decode, DataLoader
workers), loading the data set, teacher and images, writing checkpoints, PNG files and label shards, prune
(it copies stored steps), the BN hooks' sums of class-stats, the label model's forward of
``validate.label_source: online / generator``, first-call overheads (CUDA context, cuDNN autotuning, allocator
warm-up), and other processes that share the machine. Seconds are wall-clock seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Callable

import torch
import torch.nn.functional as F

from ..config import Config, student_specs
from ..data import normalize
from ..labels.relabel import StepPlan, chunk_images_for, generate_steps, sample_step
from ..labels.replay import build_batch
from ..models import build_model, forward_hooks, require_bn_layers
from ..provenance import model_tag
from ..recover import BNInputHook, Segment, recover_segments
from ..runtime import autocast, pick_device, set_threads
from ..squeeze import train_augmentation
from ..training import make_optimizer, optimizer_step
from ..validate import student_loss
from ..variants import plan_batches, resolve_mode

WARMUP_CALLS = 1
MIN_CALLS, MAX_CALLS, MIN_SECONDS = 2, 20, 0.5
EVAL_PIXELS = 256 * 32 * 32  # images per timed evaluation forward: 256 at 32 px, 5 at 224 px
SQUEEZE_EVAL_BATCH = 1000  # labeldistill.training.evaluate's default, which squeeze uses
NOT_COUNTED = ("data loading and decoding from disk, checkpoint / image / label-shard writes, prune, first-call "
               "overheads, other processes on the machine")


def seconds_per_call(fn: Callable[[], object], device: torch.device) -> float:
    """Mean wall seconds of ``fn()`` after ``WARMUP_CALLS`` untimed calls (see the module docstring)."""
    for _ in range(WARMUP_CALLS):
        fn()
    calls, spent = 0, 0.0
    while calls < MIN_CALLS or (spent < MIN_SECONDS and calls < MAX_CALLS):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        spent += time.perf_counter() - t0
        calls += 1
    return spent / calls


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images(n: int, shape: tuple[int, int, int], device: torch.device | None = None) -> torch.Tensor:
    """Random uint8 images ``(n, C, H, W)``."""
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, device=device)


def eval_rate(model: torch.nn.Module, shape: tuple[int, int, int], batch: int, cfg: Config,
              device: torch.device, autocast_on: bool = False) -> float:
    """Seconds per image of a no-grad eval forward (normalise, forward, argmax) at up to ``batch`` images.

    ``autocast_on``: run under the config's autocast (class-stats, recover's top-1 check); evaluation
    itself runs in float32 (:func:`labeldistill.training.evaluate`).
    """
    n = max(1, min(batch, EVAL_PIXELS // (shape[1] * shape[2])))
    u8 = _images(n, shape)
    mean, std = (0.5,) * shape[0], (0.25,) * shape[0]
    was = model.training
    model.eval()

    @torch.no_grad()
    def step() -> None:
        x = normalize(u8.to(device).float() / 255, mean, std).contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.autocast) if autocast_on else contextlib.nullcontext():
            model(x).argmax(1).cpu()

    sec = seconds_per_call(step, device) / n
    model.train(was)
    return sec


def squeeze_rate(cfg: Config, shape: tuple[int, int, int], num_classes: int, n_train: int,
                 device: torch.device) -> tuple[float, float]:
    """(seconds per squeeze training step, seconds per evaluated image) of a freshly built teacher."""
    sc = cfg.squeeze
    model = build_model(sc.model, num_classes, shape).to(device).to(memory_format=torch.channels_last)
    opt = make_optimizer("sgd", model.parameters(), sc.lr, sc.momentum, sc.weight_decay, nesterov=True)
    aug = train_augmentation(sc, shape[1:])
    b = max(1, min(sc.batch_size, n_train))
    u8, y = _images(b, shape), torch.randint(0, num_classes, (b,), device=device)
    mean, std = (0.5,) * shape[0], (0.25,) * shape[0]

    def step() -> None:
        x = normalize(aug(u8.float().div_(255)).to(device), mean, std).contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.autocast):
            loss = F.cross_entropy(model(x), y)
        optimizer_step(opt, loss, "teacher", "the time probe", "squeeze.lr")

    model.train()
    per_step = seconds_per_call(step, device) if sc.epochs > 0 and not sc.checkpoint else 0.0
    return per_step, eval_rate(model, shape, SQUEEZE_EVAL_BATCH, cfg, device)


def frozen_teacher(cfg: Config, shape: tuple[int, int, int], num_classes: int, device: torch.device) -> torch.nn.Module:
    """The teacher as recover, class-stats and relabel load it: eval mode, frozen parameters (random weights)."""
    model = build_model(cfg.squeeze.model, num_classes, shape).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def class_stats_rate(cfg: Config, teacher: torch.nn.Module, shape: tuple[int, int, int],
                     device: torch.device) -> float:
    """Seconds per training image of the class-stats pass (augmentation + teacher forward; hooks not timed)."""
    sc = cfg.squeeze
    n = max(1, min(cfg.class_stats.batch_size, EVAL_PIXELS // (shape[1] * shape[2])))
    u8 = _images(n, shape)
    aug = train_augmentation(sc, shape[1:]) if cfg.class_stats.augment else torch.nn.Identity()
    mean, std = (0.5,) * shape[0], (0.25,) * shape[0]

    @torch.no_grad()
    def step() -> None:
        x = normalize(aug(u8.float().div_(255)).to(device), mean, std).contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.autocast):
            teacher(x)

    return seconds_per_call(step, device) / n


def recover_rate(cfg: Config, mode: str, teacher: torch.nn.Module, shape: tuple[int, int, int], num_classes: int,
                 device: torch.device) -> float:
    """Seconds per teacher forward + backward of ``mode``'s first batch group
    (:func:`labeldistill.recover.recover_segments` with one iteration per call)."""
    recover_cfg = cfg.recover
    switches = resolve_mode(mode, recover_cfg.variants)
    bns = require_bn_layers(teacher, cfg.squeeze.model.name)
    batches = plan_batches(switches.batching, num_classes, recover_cfg.ipc, recover_cfg.batch_size)
    group = batches[:recover_cfg.vectorize]
    targets = [(torch.zeros(b.num_features, device=device), torch.ones(b.num_features, device=device)) for b in bns]
    one = dataclasses.replace(cfg, recover=dataclasses.replace(recover_cfg, iterations=1))
    hooks = [BNInputHook() for _ in bns]
    mean, std = (0.5,) * shape[0], (0.25,) * shape[0]

    def segments() -> list[Segment]:
        return [Segment(torch.tensor([c for c, _ in b]), targets, torch.Generator().manual_seed(i),
                        torch.rand((len(b), *shape)) if recover_cfg.init == "real" else None)
                for i, b in enumerate(group)]

    with forward_hooks(bns, hooks):
        return seconds_per_call(lambda: recover_segments(teacher, hooks, segments(), shape, mean, std, one, device,
                                                         switches.crop_schedule), device)


def relabel_rate(cfg: Config, teacher: torch.nn.Module, shape: tuple[int, int, int], n_images: int,
                 device: torch.device) -> float:
    """Seconds per stored entry (one augmented image through the teacher) of
    :func:`labeldistill.labels.relabel.generate_steps` at ``relabel.batch_size``."""
    relabel_cfg = cfg.relabel
    b = max(1, min(relabel_cfg.batch_size, n_images))
    plan = StepPlan(b, b, 10**6, cfg.seed)  # one step per epoch: every probed step is a full batch
    u8 = _images(b, shape)
    hw = (shape[1], shape[2])
    per_call = max(1, chunk_images_for(hw) // b)  # steps per teacher forward, as relabel chunks them
    calls = iter(range(0, 10**6, per_call))

    def step() -> None:
        first = next(calls)
        list(generate_steps(teacher, u8, plan, range(first, first + per_call), relabel_cfg, (0.5,) * shape[0],
                            (0.25,) * shape[0], device, progress=False, amp=cfg.autocast))

    return seconds_per_call(step, device) / (per_call * b)


def validate_rate(cfg: Config, spec, shape: tuple[int, int, int], num_classes: int, n_images: int,
                  device: torch.device) -> tuple[float, float]:
    """(seconds per validate training step, seconds per evaluated image) of the student ``spec``."""
    vc, relabel_cfg = cfg.validate, cfg.relabel
    torch.manual_seed(cfg.seed)
    student = build_model(spec, num_classes, shape).to(device).to(memory_format=torch.channels_last)
    opt = make_optimizer(vc.optimizer, student.parameters(), vc.lr, vc.momentum, vc.weight_decay)
    b = max(1, min(relabel_cfg.batch_size, n_images))
    plan = StepPlan(b, b, 10**6, cfg.seed)
    u8 = _images(b, shape)
    hw = (shape[1], shape[2])
    steps = iter(range(10**6))
    hard = torch.randint(0, num_classes, (b,), device=device)

    def step() -> None:
        rec = sample_step(plan, next(steps), relabel_cfg, hw, hw)
        rec.logits = torch.randn((b, num_classes)).to(torch.float16)
        x = build_batch(u8, rec, hw, (0.5,) * shape[0], (0.25,) * shape[0])
        t = rec.soft_targets(num_classes, vc.temperature)
        with autocast(device, cfg.autocast):
            out = student(x.to(device).contiguous(memory_format=torch.channels_last))
        loss = student_loss(vc, out.float(), t.to(device), hard)
        optimizer_step(opt, loss, "student", "the time probe", "validate.lr")

    student.train()
    per_step = seconds_per_call(step, device)
    return per_step, eval_rate(student, shape, vc.eval_batch_size, cfg, device)


class _Rates:
    """The probes' rates, each measured once on first use (a stage that is done needs none)."""

    def __init__(self, cfg: Config, plan: dict, device: torch.device):
        self.cfg, self.device = cfg, device
        self.shape = tuple(int(v) for v in plan["image_shape"])
        self.C = int(plan["num_classes"])
        self.n_train = int(plan["data"]["splits"]["train"]["used"])
        self.n_images = max(int(r["images"]) for r in plan["recover"])
        self.values: dict[str, float] = {}
        self._teacher: torch.nn.Module | None = None
        self.specs = {model_tag(s): s for s in student_specs(cfg.validate)}

    def _get(self, key: str, fn: Callable[[], float]) -> float:
        if key not in self.values:
            self.values[key] = fn()
        return self.values[key]

    def teacher(self) -> torch.nn.Module:
        if self._teacher is None:
            self._teacher = frozen_teacher(self.cfg, self.shape, self.C, self.device)
        return self._teacher

    def squeeze(self) -> tuple[float, float]:
        if "squeeze_step" not in self.values:
            step, ev = squeeze_rate(self.cfg, self.shape, self.C, self.n_train, self.device)
            self.values.update(squeeze_step=step, teacher_eval_image=ev)
        return self.values["squeeze_step"], self.values["teacher_eval_image"]

    def teacher_forward(self) -> float:
        return self._get("teacher_forward_image", lambda: eval_rate(self.teacher(), self.shape, 256, self.cfg,
                                                                    self.device, autocast_on=True))

    def class_stats(self) -> float:
        return self._get("class_stats_image", lambda: class_stats_rate(self.cfg, self.teacher(), self.shape,
                                                                       self.device))

    def recover(self, mode: str) -> float:
        return self._get(f"recover_iteration[{mode}]", lambda: recover_rate(self.cfg, mode, self.teacher(),
                                                                            self.shape, self.C, self.device))

    def relabel(self) -> float:
        return self._get("relabel_image", lambda: relabel_rate(self.cfg, self.teacher(), self.shape, self.n_images,
                                                               self.device))

    def student(self, tag: str) -> tuple[float, float]:
        if f"validate_step[{tag}]" not in self.values:
            step, ev = validate_rate(self.cfg, self.specs[tag], self.shape, self.C, self.n_images, self.device)
            self.values.update({f"validate_step[{tag}]": step, f"student_eval_image[{tag}]": ev})
        return self.values[f"validate_step[{tag}]"], self.values[f"student_eval_image[{tag}]"]


def add_time_estimate(cfg: Config, plan: dict) -> dict:
    """Time the stages (see the module docstring) and add the seconds to :func:`labeldistill.plan.plan_run`'s dict.

    Sets ``seconds`` on every row of ``plan["stages"]`` (0 for a done stage, then also ``"seconds_note": "done"``)
    and of ``plan["validate"]``, and ``plan["time"]``: ``total_seconds`` (the sum of the stage rows),
    ``probe_seconds`` (what the timing itself took), ``device``, ``threads``, ``autocast``, ``rates`` (seconds
    per step, per iteration or per image of each probe) and ``not_counted``.

    Returns:
        ``plan["time"]``.
    """
    t0 = time.perf_counter()
    set_threads(cfg.threads)
    device = pick_device(cfg.device, cfg.deterministic)
    rates = _Rates(cfg, plan, device)
    torch.manual_seed(cfg.seed)
    for row in plan["validate"]:
        row["seconds"] = 0.0 if row["done"] else _validate_seconds(rates, row)
    for s in plan["stages"]:
        s["seconds"] = 0.0 if s["done"] else round(_stage_seconds(rates, plan, s), 3)
        if s["done"]:
            s["seconds_note"] = "done"
    plan["time"] = {"total_seconds": sum(s["seconds"] for s in plan["stages"]),
                    "probe_seconds": round(time.perf_counter() - t0, 3), "device": str(device),
                    "threads": torch.get_num_threads(), "autocast": cfg.autocast if device.type == "cuda" else "off",
                    "rates": {k: float(f"{v:.6g}") for k, v in rates.values.items()}, "not_counted": NOT_COUNTED}
    return plan["time"]


def _validate_seconds(rates: _Rates, row: dict) -> float:
    step, ev = rates.student(row["student_tag"])
    return round(row["steps"] * step + row["eval_images"] * ev, 3)


def _stage_seconds(rates: _Rates, plan: dict, s: dict) -> float:
    """Seconds of one stage row that is not done."""
    name = s["stage"]
    n_test = int(plan["data"]["splits"]["test"]["used"])
    if name == "squeeze":
        step, ev = rates.squeeze()
        return s["steps"] * step + n_test * ev
    if name == "class-stats":
        return s["images"] * rates.class_stats()
    if name.startswith("recover["):
        row = next(r for r in plan["recover"] if f"recover[{r['mode']}]" == name)
        check = row["images"] * rates.teacher_forward()  # the teacher's top-1 on the written images
        if row["source"] == "synthesis":
            return row["teacher_passes"] * rates.recover(row["mode"]) + check
        return (row.get("image_iterations", 0) or 0) * rates.teacher_forward() + check
    if name.startswith("relabel["):
        return s["images"] * rates.relabel()
    if name == "validate":
        return sum(r["seconds"] for r in plan["validate"])
    if name == "hard-label":
        return _hard_label_seconds(rates, plan, s, n_test)
    return 0.0  # prune: copies stored steps, not timed


def _hard_label_seconds(rates: _Rates, plan: dict, s: dict, n_test: int) -> float:
    """Each student's share of the hard-label steps at its validate step rate, + one evaluation per run."""
    cfg = rates.cfg
    runs = len(cfg.recover.modes) + (1 if cfg.hard_label.real else 0)
    per_student = s["steps"] / max(len(rates.specs), 1)
    total = 0.0
    for tag in rates.specs:
        step, ev = rates.student(tag)
        total += per_student * step + runs * n_test * ev
    return total


def human_seconds(sec: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 07 min``, ``3.2 days``."""
    if sec < 10:
        return f"{sec:.1f} s"
    if sec < 60:
        return f"{sec:.0f} s"
    if sec < 3600:
        return f"{int(sec // 60)} min {int(sec % 60):02d} s"
    if sec < 3 * 86400:
        return f"{int(sec // 3600)} h {int(sec % 3600 // 60):02d} min"
    return f"{sec / 86400:.1f} days"


def format_time(p: dict) -> list[str]:
    """The text lines of ``p["time"]`` (empty without a time estimate, e.g. with ``--no-probe``)."""
    t = p.get("time")
    if not t:
        return []
    done = [s["stage"] for s in p["stages"] if s.get("seconds_note") == "done"]
    return [f"time estimate: {human_seconds(t['total_seconds'])} in all on {t['device']} with {t['threads']} "
            f"thread(s), autocast {t['autocast']} (a few real steps of each stage timed, × the planned steps; "
            f"probe took {t['probe_seconds']:.1f} s)",
            "  per stage: " + ", ".join(f"{s['stage']} {human_seconds(s['seconds'])}" for s in p["stages"]),
            *([f"  done, counted as 0 s: {', '.join(done)}"] if done else []),
            f"  not counted: {t['not_counted']}"]
