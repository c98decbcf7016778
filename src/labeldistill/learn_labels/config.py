"""Typed config of the ``learn-labels`` job (label distillation, Bohdal, Yang & Hospedales 2020).

Loaded with the main job's generic loader, :func:`labeldistill.config.load_typed_config` (YAML + dotted
``key=value`` overrides, unknown keys rejected), then range-checked by :func:`validate_ld_config` (which never
changes the config; the ``data`` keys it shares with the main job are checked by
:func:`labeldistill.config.checks.check_data`). Defaults follow the reference configuration of the
paper (spec §9): N = 100 base examples, inner batch 50, outer batch 1024, inner lr 0.01, labels as probabilities
with uniform init and Adam 1e-3, reset window 50, validation every 5 epochs, λ = 1 for RR, 20 test repeats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import ModelConfig, RunConfig, load_typed_config
from ..config import checks as chk
from ..errors import ConfigError

METHODS = ("ld", "rr", "dd", "onehot", "smooth", "teacher")
DEFAULT_METHODS = ("ld", "rr", "onehot", "smooth", "teacher")  # dd (image learning) only when asked for
LEARNED_METHODS = ("ld", "rr", "dd")
DD_INITS = ("real", "noise")
OPTIMIZERS = ("sgd", "sgd_momentum", "adam", "adamw")
LABEL_PARAMS = ("prob", "logits")
LABEL_INITS = ("uniform", "onehot", "teacher")
BASE_MODES = ("balanced", "unbalanced")
STEP_RULES = ("paper", "val")


@dataclass
class LDDataConfig:
    """Target and source (base-example) datasets.

    Attributes:
        target: registry name of the target dataset: its classes are the label classes, its train split gives
            the outer-loss batches and the validation split, its test split is used only at meta-test.
        target_root: folder of the target files (``None`` = the dataset's default location).
        source: dataset the base examples come from; ``None`` = the target (within-dataset distillation).
        source_root: folder of the source files.
        val_size: images held out of the target TRAIN split for model selection (never the test split); drawn
            after the base examples, from the images that are not base examples.
        target_subset: use only this many of the remaining target train images as outer-loss data
            (seeded, class-balanced); ``None`` = all of them.
        test_subset: evaluate on this many test images (seeded, class-balanced); ``None`` = the whole split.
        split_seed: seed of the train/validation split.
        image_size: load the target AND the source at ``image_size × image_size`` pixels (shorter side to
            ``resize``, then a centre crop): an ``imagefolder`` resizes each file with Pillow, any other dataset's
            uint8 tensor is resized with torchvision (bilinear, antialiased); ``None`` = native sizes, which must
            then be equal. Cross-dataset runs of different sizes (28 px base examples, 32 px target) need it.
        resize: shorter side in pixels before the centre crop; ``None`` = ``image_size``.
        lazy: ``imagefolder`` only: list the files and decode only the images the run uses (base examples,
            outer-loss, validation and test images; the meta-training tensors still live in memory).
        mean, std: per-channel normalisation of the TARGET in [0, 1] units (every image of the run is normalised
            with the target's); ``None`` = the target dataset's own.
        test_holdout: make the target's test split this many images held out of its train split (class-balanced,
            fixed seed, before the validation split and the base examples) instead of its own test split: for an
            ImageFolder without a ``test/`` or ``val/`` folder, which is refused otherwise. ``0``: its test split.
    """

    target: str = "fashion-mnist"
    target_root: str | None = None
    source: str | None = None
    source_root: str | None = None
    val_size: int = 10000
    target_subset: int | None = None
    test_subset: int | None = None
    split_seed: int = 0
    image_size: int | None = None
    resize: int | None = None
    lazy: bool = False
    mean: list | None = None
    std: list | None = None
    test_holdout: int = 0


@dataclass
class BaseConfig:
    """Base-example selection (spec §2).

    Attributes:
        n: number of base examples N (balanced mode: a multiple of the source's class count).
        mode: ``balanced`` (N / C random images per source class) or ``unbalanced`` (one random batch of N).
        seed: seed of the choice (the paper's default is 1234).
    """

    n: int = 100
    mode: str = "balanced"
    seed: int = 1234


@dataclass
class LabelConfig:
    """Parameterisation of the learned labels (spec §3 and §14).

    Attributes:
        param: ``prob`` (the paper: probabilities, clamped to [0, 1] and renormalised after every Adam step) or
            ``logits`` (labels = softmax(z / temperature), always on the simplex).
        init: ``uniform`` (the paper), ``onehot`` (the base example's own class; cross-dataset: source class
            ``i`` → target class ``i``) or ``teacher`` (the teacher's soft labels).
        init_smoothing: mix ``s`` of the uniform distribution into the initial labels, ``(1 - s) p + s / C``;
            must be > 0 for ``logits`` with a non-uniform init (log of zero otherwise).
        lr: Adam learning rate of the label parameters.
        temperature: softmax temperature of the ``logits`` parameterisation.
    """

    param: str = "prob"
    init: str = "uniform"
    init_smoothing: float = 0.0
    lr: float = 0.001
    temperature: float = 1.0


@dataclass
class MetaConfig:
    """Meta-training loop shared by LD and RR (spec §4, §5, §7).

    Attributes:
        epochs: passes over the outer-loss target data.
        outer_batch: target images per outer step (the paper: 1024).
        inner_batch: base examples per inner step ``n_i``.
        model_lr: Adam learning rate of the online model (and of every Adam-trained fresh model).
        reset_window: window W of the moving-average target error; the model is re-initialised when the
            average has not reached a new minimum for W steps. ``None`` = 50 for N ≤ 100, else 200.
        val_every: run model selection every this many epochs (and after the last epoch).
        max_steps: cap on the training length of a fresh model (validation and meta-test);
            ``None`` = 1000 for N ≤ 100, else 1701 (the paper's baseline search ranges).
        last_batch: ``keep`` (default; the reference's target loader keeps the short last batch of each epoch:
            ``⌈M / outer_batch⌉`` label updates per epoch, 400 × ⌈50,000 / 1,024⌉ = 19,600 on MNIST) or
            ``drop`` (``⌊M / outer_batch⌋``; this project's behaviour before 2026-12-06).
        checkpoint_seconds: save the meta-training loop's whole state (labels or images, online model, optimisers,
            plateau tracker, RNG states, best snapshot) into the run's resume file at the end of an epoch, at most
            this often (seconds; ``0``: every epoch); a run killed mid-meta-training continues from the last save
            and ends with the same bytes. Not part of the settings fingerprint (it changes no result).
    """

    epochs: int = 400
    outer_batch: int = 1024
    inner_batch: int = 50
    model_lr: float = 0.001
    reset_window: int | None = None
    val_every: int = 5
    max_steps: int | None = None
    last_batch: str = "keep"
    checkpoint_seconds: float = 60.0


@dataclass
class LDConfig:
    """Second-order method, LD (spec §4).

    Attributes:
        inner_lr: SGD step size α of the unrolled inner step(s).
        inner_steps: number k of unrolled inner SGD steps (the paper's code effectively uses 1).
    """

    inner_lr: float = 0.01
    inner_steps: int = 1


@dataclass
class RRConfig:
    """First-order ridge-regression method, RR (spec §6).

    Attributes:
        lam: ridge penalty λ of the dual solve.
        ema: rate of the exponential moving average of the global head, ``H ← (1 - ema) H + ema W_l``.
        scale_lr: Adam learning rate of the calibration scale ``s``.
    """

    lam: float = 1.0
    ema: float = 0.01
    scale_lr: float = 0.01


@dataclass
class DDConfig:
    """Image-learning baseline (Wang et al. 2018 dataset distillation on LD's machinery; see :mod:`.dd`).

    DD shares LD's inner loop (``ld.inner_lr``, ``ld.inner_steps``), online model, outer batches and number of
    outer steps (``meta.*``); only the learned quantity (pixels of the N images, with fixed one-hot labels) and
    its optimiser differ.

    Attributes:
        init: ``real`` (start from the real base examples) or ``noise`` (standard normal pixels in normalised
            units, Wang et al.'s random init).
        lr: Adam learning rate of the pixels (normalised units; Wang et al. use Adam with lr 0.01).
    """

    init: str = "real"
    lr: float = 0.01


@dataclass
class TeacherConfig:
    """Teacher for the ``teacher`` baseline and ``labels.init: teacher`` (project addition, spec §8).

    Attributes:
        model: teacher architecture.
        epochs: Adam epochs over the target meta-train images (no augmentation).
        batch_size: teacher minibatch size.
        lr: teacher Adam learning rate.
        temperature: the soft labels are ``softmax(logits / temperature)``.
        checkpoint: use this teacher instead of training one: the ``teacher/`` folder of an earlier run
            (``model.safetensors`` + ``teacher.json`` + ``split.safetensors``), or a ``state_dict`` file trained
            elsewhere (``.safetensors`` / ``.pth`` / ``.pt``, in the forms
            :func:`~labeldistill.models.checkpoint.load_state_dict_file` accepts) for ``teacher.model`` with the
            target's classes, input size and normalisation; ``None`` = train one (saved in the run directory).
        unknown_split: accept a ``state_dict`` file trained elsewhere although nothing records which images it
            was trained on (it may have seen this run's validation split); without it such a checkpoint is
            refused. ``results.json`` records ``split_checked: false`` for it.
    """

    model: ModelConfig = field(default_factory=lambda: ModelConfig("convnet", {"width": 64, "norm": "instance"}))
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.001
    temperature: float = 1.0
    checkpoint: str | None = None
    unknown_split: bool = False


@dataclass
class MetaTestConfig:
    """Meta-test protocol (spec §8).

    Attributes:
        repeats: fresh models per row (mean ± std of top-1 on the real test split).
        optimizers: optimizers to train fresh models with (``sgd``, ``sgd_momentum``, ``adam``, ``adamw``).
        lrs: learning rate per optimizer.
        momentum: momentum of ``sgd_momentum``.
        weight_decay: weight decay of ``adamw``.
        archs: extra architectures to test on besides the learner (names or ``{name, args}`` mappings).
        rr_learner: also test every label set with the RR learner (feature extractor + EMA ridge head) when
            ``rr`` is among the methods.
        rr_plain: also test RR labels with plain networks.
        step_rule: ``paper``: LD/RR labels on their own learner with Adam use the step count found during
            meta-training and every other row searches the step count on validation; ``val``: every row
            searches it on validation.
        eval_batch: batch size of evaluation passes.
    """

    repeats: int = 20
    optimizers: list = field(default_factory=lambda: ["adam"])
    lrs: dict = field(default_factory=lambda: {"sgd": 0.01, "sgd_momentum": 0.01, "adam": 0.001,
                                               "adamw": 0.001})
    momentum: float = 0.9
    weight_decay: float = 0.01
    archs: list = field(default_factory=list)
    rr_learner: bool = True
    rr_plain: bool = True
    step_rule: str = "paper"
    eval_batch: int = 1000


@dataclass
class LearnLabelsConfig(RunConfig):
    """A whole ``learn-labels`` run: one run directory, every setting.

    Attributes:
        name, run_dir, seed, device, threads: as :class:`~labeldistill.config.RunConfig`; the seed drives model
            initialisations, target batches and inner batches.
        methods: label sets to produce and meta-test (``ld``, ``rr``, ``dd``, ``onehot``, ``smooth``, ``teacher``);
            ``dd`` learns the images instead (one-hot labels), see :class:`DDConfig`; default: all but ``dd``.
        learner: the meta-training network (LD: the whole network; RR: its ``embed`` is the feature
            extractor). Prefer ``norm: instance`` or ``none``: LD's functional forward uses batch statistics.
        smoothing: label-smoothing amount of the ``smooth`` baseline.
        plot_examples: base examples shown in ``labels.png``.
        labels_from: a finished run directory whose ``labels.safetensors`` + ``labels.json`` provide the label
            sets, base examples and step counts: meta-training and the teacher are skipped and only the
            meta-test runs (e.g. new architectures or optimisers for labels learned earlier).
    """

    name: str = "learn_labels"
    methods: list = field(default_factory=lambda: list(DEFAULT_METHODS))
    data: LDDataConfig = field(default_factory=LDDataConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    learner: ModelConfig = field(default_factory=lambda: ModelConfig("convnet", {"width": 32, "norm": "instance"}))
    labels: LabelConfig = field(default_factory=LabelConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    ld: LDConfig = field(default_factory=LDConfig)
    rr: RRConfig = field(default_factory=RRConfig)
    dd: DDConfig = field(default_factory=DDConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    metatest: MetaTestConfig = field(default_factory=MetaTestConfig)
    smoothing: float = 0.1
    plot_examples: int = 10
    labels_from: str | None = None

    def reset_window(self) -> int:
        """W: the configured value, else 50 for N ≤ 100 and 200 above (spec §5)."""
        if self.meta.reset_window is not None:
            return self.meta.reset_window
        return 50 if self.base.n <= 100 else 200

    def max_steps(self) -> int:
        """Training-length cap of fresh models: configured, else 1000 for N ≤ 100 and 1701 above (spec §8)."""
        if self.meta.max_steps is not None:
            return self.meta.max_steps
        return 1000 if self.base.n <= 100 else 1701


def parse_arch(entry: object, where: str) -> ModelConfig:
    """A model spec from a config entry: a registry name or a ``{name, args}`` mapping.

    Raises:
        ConfigError: anything else, or unknown keys in the mapping.
    """
    if isinstance(entry, str):
        return ModelConfig(entry, {})
    if isinstance(entry, ModelConfig):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("name"), str) and set(entry) <= {"name", "args"}:
        args = entry.get("args") or {}
        if not isinstance(args, dict):
            raise ConfigError(f"{where}: 'args' must be a mapping, got {args!r}")
        return ModelConfig(entry["name"], dict(args))
    raise ConfigError(f"{where}: expected a model name or a mapping {{name: ..., args: {{...}}}}, got {entry!r}")


def _check_methods_and_labels(cfg: LearnLabelsConfig) -> None:
    if not cfg.methods:
        raise ConfigError(f"methods must name at least one of: {', '.join(METHODS)}")
    for m in cfg.methods:
        chk.one_of(m, METHODS, "methods", what="method")
    if len(set(cfg.methods)) != len(cfg.methods):
        raise ConfigError(f"methods lists a method twice: {cfg.methods}")
    chk.one_of(cfg.base.mode, BASE_MODES, "base.mode")
    chk.at_least(cfg.base.n, 1, "base.n")
    chk.one_of(cfg.labels.param, LABEL_PARAMS, "labels.param")
    chk.one_of(cfg.labels.init, LABEL_INITS, "labels.init")
    chk.in_interval(cfg.labels.init_smoothing, 0, 1, "labels.init_smoothing")
    if cfg.labels.param == "logits" and cfg.labels.init != "uniform" and cfg.labels.init_smoothing == 0:
        raise ConfigError("labels.param=logits with a non-uniform labels.init needs labels.init_smoothing > 0 "
                          "(e.g. 0.1): a zero probability has no finite logit")
    chk.positive(cfg.labels.lr, "labels.lr")
    chk.positive(cfg.labels.temperature, "labels.temperature")


def _check_meta(cfg: LearnLabelsConfig) -> None:
    for key in ("epochs", "outer_batch", "inner_batch", "val_every"):
        chk.at_least(getattr(cfg.meta, key), 1, f"meta.{key}")
    if cfg.meta.inner_batch > cfg.base.n:
        raise ConfigError(f"meta.inner_batch ({cfg.meta.inner_batch}) must not exceed base.n ({cfg.base.n})")
    chk.one_of(cfg.meta.last_batch, ("keep", "drop"), "meta.last_batch")
    chk.positive(cfg.meta.model_lr, "meta.model_lr")
    chk.at_least(cfg.meta.checkpoint_seconds, 0, "meta.checkpoint_seconds")
    chk.at_least(cfg.meta.reset_window, 1, "meta.reset_window", nullable=True)
    chk.at_least(cfg.meta.max_steps, 1, "meta.max_steps", nullable=True)
    chk.positive(cfg.ld.inner_lr, "ld.inner_lr")
    chk.at_least(cfg.ld.inner_steps, 1, "ld.inner_steps")
    chk.positive(cfg.rr.lam, "rr.lam")
    chk.in_interval(cfg.rr.ema, 0, 1, "rr.ema", closed="right")
    chk.positive(cfg.rr.scale_lr, "rr.scale_lr")
    chk.one_of(cfg.dd.init, DD_INITS, "dd.init")
    chk.positive(cfg.dd.lr, "dd.lr")
    if cfg.teacher.epochs < 1 or cfg.teacher.batch_size < 1:
        raise ConfigError("teacher.epochs and teacher.batch_size must be >= 1")
    chk.positive(cfg.teacher.lr, "teacher.lr")
    chk.positive(cfg.teacher.temperature, "teacher.temperature")
    chk.in_interval(cfg.smoothing, 0, 1, "smoothing", closed="left")


def _check_metatest(mt: MetaTestConfig) -> None:
    chk.at_least(mt.repeats, 1, "metatest.repeats")
    if not mt.optimizers:
        raise ConfigError(f"metatest.optimizers must name at least one of: {', '.join(OPTIMIZERS)}")
    for o in mt.optimizers:
        chk.one_of(o, OPTIMIZERS, "metatest.optimizers", what="optimizer")
        lr = mt.lrs.get(o)
        if not chk.is_number(lr) or lr <= 0:
            raise ConfigError(f"metatest.lrs.{o} must be a number > 0, got {lr!r}")
    chk.one_of(mt.step_rule, STEP_RULES, "metatest.step_rule")
    chk.at_least(mt.eval_batch, 1, "metatest.eval_batch")
    for i, a in enumerate(mt.archs):
        parse_arch(a, f"metatest.archs[{i}]")


def validate_ld_config(cfg: LearnLabelsConfig) -> None:
    """Range checks that types alone cannot express.

    Raises:
        ConfigError: on the first bad value, naming the key and the accepted values.
    """
    chk.check_data(cfg.data)
    _check_methods_and_labels(cfg)
    _check_meta(cfg)
    _check_metatest(cfg.metatest)
    if cfg.data.val_size < 1:
        raise ConfigError(f"data.val_size must be >= 1 (model selection needs a validation split), "
                          f"got {cfg.data.val_size}")
    chk.at_least(cfg.plot_examples, 0, "plot_examples")


def load_ld_config(path: str | Path | None = None, overrides: list[str] | None = None) -> LearnLabelsConfig:
    """Load a ``learn-labels`` YAML config, apply ``key=value`` overrides and range-check it.

    Raises:
        ConfigError: missing/unparsable file, unknown key, wrong type or out-of-range value.
    """
    cfg = load_typed_config(LearnLabelsConfig, path, overrides)
    validate_ld_config(cfg)
    return cfg
