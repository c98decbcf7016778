"""The config schema: every section of the main job's config as a typed dataclass, with its keys' meaning.

This module only declares: a section's fields, their types and defaults, and (in its docstring) what each key
does, in which units, and where its default comes from. Reading YAML into these classes is
:mod:`labeldistill.config.loader`'s job; range and choice checks are :mod:`labeldistill.config.checks`'s. To add a
key: add the field and its docstring line here, its range check to the section's function in ``checks``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ModelConfig:
    """A model from the registry: ``name`` plus keyword arguments for its builder."""

    name: str = "convnet"
    args: dict = field(default_factory=dict)


@dataclass
class DataConfig:
    """Dataset selection.

    Attributes:
        dataset: registry name (``fashion-mnist``, ``digits``, ``imagefolder``).
        root: folder with the files; ``None`` uses the dataset's default location.
        train_subset: use only this many training images (a seeded, class-balanced subset); ``None`` = all.
        test_subset: use only this many test images; ``None`` = all.
        holdout: hold this many images out of the train split as a validation split (split ``holdout``):
            class-balanced (a multiple of the number of classes), drawn from the whole train split with a fixed
            seed (:data:`labeldistill.data.loading.HOLDOUT_SEED`, not the run's ``seed``), before
            ``train_subset``. Held-out images are used by no stage that trains or synthesises (squeeze,
            class-stats, real-image sources, ``recover.init: real``); ``validate.eval_split: holdout`` scores the
            student on them. ``0`` (the default) holds nothing out.
        test_holdout: make the test split this many images held out of the train split (class-balanced, a
            fixed seed :data:`labeldistill.data.loading.TEST_HOLDOUT_SEED`, drawn before ``holdout``) instead of the
            dataset's own test split; for an ImageFolder without a ``test/`` or ``val/`` folder, which is refused
            otherwise (its test split would be its training images). ``0`` (the default): the dataset's test split.
        workers: DataLoader worker processes: decode a lazy dataset's batches in squeeze, class-stats and
            evaluation on the real splits, and build replayed batches in validate.
        image_size: ``imagefolder`` only: resize every image (shorter side to ``resize`` pixels) and
            centre-crop it to ``image_size × image_size`` pixels; ``None`` keeps the native size, which must then
            be the same for every image. It is the input size of every later stage (recover, relabel, validate).
        resize: ``imagefolder`` only: shorter side in pixels before the centre crop; ``None`` = ``image_size``
            (ImageNet's evaluation preset is ``resize: 256`` with ``image_size: 224``).
        lazy: ``imagefolder`` only: keep only the file list and decode images with Pillow when a batch is
            needed (for folders too large for memory, e.g. ImageNet).
        mean: per-channel normalisation mean in [0, 1] units (one value per channel); ``None`` = the
            dataset's own (``imagefolder``: computed from the images; lazy: estimated from 256 of them).
        std: per-channel normalisation std, as ``mean``.
        class_order: ``tiny-imagenet`` only: ``sorted`` (``None``, the default: sorted wnids, the order of
            torchvision's ImageFolder and of the LPLD / SRe2L reference teachers) or ``wnids`` (the order of
            ``wnids.txt``).
        mirror_symmetric: whether a horizontally flipped image is still an image of its class; ``None`` = what the
            dataset is registered with (digits, ``digits28``, ``mnist-5k``: false; every other dataset, and
            ``imagefolder``: true). The flip defaults of squeeze, recover and relabel follow it
            (:mod:`labeldistill.data.presets`); set it to false for a folder of digits, letters or text.
    """

    dataset: str = "fashion-mnist"
    root: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    holdout: int = 0
    test_holdout: int = 0
    workers: int = 0
    image_size: int | None = None
    resize: int | None = None
    lazy: bool = False
    mean: list | None = None
    std: list | None = None
    class_order: str | None = None
    mirror_symmetric: bool | None = None


@dataclass
class SqueezeConfig:
    """Teacher training (SRe2L stage 1): SGD + momentum, cosine lr, random crop + flip.

    ``checkpoint``: a ``state_dict`` file (``.safetensors``, or ``.pth`` in torchvision's key layout) to use
    as the teacher instead of training one. ``warmup_epochs``: linear warm-up from 0.01 × ``lr`` over this
    many epochs before the cosine schedule (Tiny-ImageNet recipe: 5). ``crop_scale``: if set, a
    RandomResizedCrop with this area range ``[low, high]`` replaces the padded random crop, in training and in
    the class-statistics pass (Tiny-ImageNet / ImageNet recipe: ``[0.08, 1.0]``). ``flip``: random horizontal
    flip in training and in the class-statistics pass; ``None`` (the default) = the dataset's mirror symmetry
    (:mod:`labeldistill.data.presets`). ``force_teacher``: use a ``checkpoint`` whose top-1 on the test split is
    at most 1.5 × chance anyway (refused by default: such a teacher's class order most likely differs from the
    dataset's).
    """

    model: ModelConfig = field(default_factory=lambda: ModelConfig("convnet", {"width": 64}))
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_padding: int = 2
    flip: bool | None = None
    checkpoint: str | None = None
    warmup_epochs: int = 0
    crop_scale: list | None = None
    force_teacher: bool = False


@dataclass
class ClassStatsConfig:
    """Class-wise BN statistics pass (LPLD §3): one eval-mode pass over the augmented train set.

    ``mode``: ``exact`` (per-class mean / biased variance over the whole pass) or ``ema`` (the reference's
    momentum-0.1 running averages over per-class sub-batches, in a shuffled order; :mod:`labeldistill.bnstats`).
    """

    batch_size: int = 512
    augment: bool = True
    mode: str = "exact"


@dataclass
class RecoverConfig:
    """Where the distilled images come from: BN-statistics synthesis (SRe2L / CDA / LPLD) or real baselines.

    Attributes:
        modes: image sources to run, each a built-in recover mode or a key of ``variants``. Built-in:
            ``sre2l`` (cross-class batches, global BN targets), ``c`` (class-wise batches, global targets),
            ``cs`` / ``lpld`` (class-wise batches, class-wise targets: LPLD), ``cda`` (SRe2L + CDA's crop
            curriculum), ``random_real`` (IPC random real training images per class), ``rded`` (RDED:
            teacher-scored real crops stitched together).
        variants: extra named recover modes (the YAML key keeps its name; each is read into a
            :class:`~labeldistill.variants.RecoverMode`), each a mapping with ``batching`` (``cross_class`` |
            ``class_wise``), ``bn_targets`` (``global`` | ``class``) and optionally ``crop_schedule`` (``fixed`` |
            ``cda``); or ``{source: folder | tensor, path: DIR}``: a set made elsewhere
            (:mod:`labeldistill.data.owned`).
        ipc: images per class.
        iterations: optimisation steps per batch.
        lr: Adam learning rate (cosine-annealed to 0).
        r_bn: weight of the BN-statistics loss.
        first_bn_multiplier: extra weight of the first BN layer's term (``s_1``).
        batch_size: images per optimisation batch (class-wise: at most IPC of one class).
        crop_scale: RandomResizedCrop scale range [low, high] as fractions of the area; the ``cda`` schedule
            anneals the lower bound from ``high`` down to ``low``.
        cda_milestone: fraction of the iterations over which the CDA curriculum reaches ``low``.
        crops: ``per_batch`` (one crop and flip for the whole batch, as the reference code) or ``per_image``.
        jitter: maximum roll offset in pixels each iteration.
        flip: random horizontal flip each iteration; ``None`` (the default) = the dataset's mirror symmetry
            (:mod:`labeldistill.data.presets`).
        init: ``noise`` (N(0, 1) in normalised space, as the papers) or ``real`` (real images of the class).
        rded_factor: RDED stitches ``factor²`` patches into one image.
        rded_candidates: RDED scores this many random crops per kept patch and keeps the most confident.
        vectorize: optimise this many batches together in one teacher forward (same images as one at a
            time; much higher throughput for small class-wise batches).
    """

    modes: list = field(default_factory=lambda: ["sre2l", "lpld"])
    variants: dict = field(default_factory=dict)
    ipc: int = 10
    iterations: int = 500
    lr: float = 0.1
    r_bn: float = 0.01
    first_bn_multiplier: float = 10.0
    batch_size: int = 100
    crop_scale: list = field(default_factory=lambda: [0.5, 1.0])
    cda_milestone: float = 1.0
    crops: str = "per_batch"
    jitter: int = 2
    flip: bool | None = None
    init: str = "noise"
    rded_factor: int = 2
    rded_candidates: int = 5
    vectorize: int = 1


@dataclass
class RelabelConfig:
    """FKD-style stored soft labels.

    Attributes:
        epochs: number of stored epochs ``E``.
        batch_size: images per stored step ``B``.
        crop_scale: RandomResizedCrop scale range ``[low, high]`` (fractions of the area); ``None`` (the default)
            = ``[m, 1.0]`` with ``m`` the dataset's smallest sensible crop (0.08, ImageNet's recipe; digits: 0.25).
        flip: random horizontal flip (p = 0.5); ``None`` (the default) = the dataset's mirror symmetry.
            Both defaults are resolved by :mod:`labeldistill.data.presets` before a stage runs.
        cutmix: probability of CutMix per step (0 disables it).
        cutmix_alpha: Beta(alpha, alpha) parameter for λ.
        logits: ``fp16`` (all C logits) or ``top<k>`` (k largest logits as fp16 + their class indices).
        steps_per_shard: stored steps per safetensors shard.
        only_kept: if set, a pruning factor: generate only the steps that random pruning at this factor
            keeps (cheaper; identical to generating everything and pruning with the same seed).
    """

    epochs: int = 300
    batch_size: int = 50
    crop_scale: list | None = None
    flip: bool | None = None
    cutmix: float = 0.0
    cutmix_alpha: float = 1.0
    logits: str = "fp16"
    steps_per_shard: int = 200
    only_kept: float | None = None


@dataclass
class PruneConfig:
    """Soft-label pruning; every combination of the lists below becomes one pruned store.

    Attributes:
        factors: pruning factors ``f`` >= 1 (``r = 1 - 1/f``): pool ``prefix`` keeps the first
            ``max(1, int((1 - r) · S))`` of the ``S`` stored steps, pool ``subset`` ``max(1, round(S / f))``.
        strategies: ``random`` or ``<metric>-<easy|hard>`` with metric in ``confidence``, ``diff``,
            ``diff_signed``, ``correct``, ``cut_ratio`` (see :mod:`labeldistill.labels.prune`).
        logits: label formats of the pruned stores: ``fp16`` or ``top<k>``.
        granularity: ``batch`` (keep single steps; each training epoch draws steps with replacement: LPLD's
            improved label pool) or ``epoch`` (keep whole stored epochs; each training epoch replays one).
        pool: ``prefix`` (the reference: the first stored steps in generation order) or ``subset`` (a seeded
            uniform random subset); see :mod:`labeldistill.labels.pool`.
        replay: ``ordered`` (training epoch e replays kept stored epoch e mod their number, in stored order),
            ``pool`` (draw from the kept pool as ``granularity`` says) or ``null``: ``ordered`` at factor 1,
            ``pool`` at every other factor (the reference's ``order`` / ``random``).
    """

    factors: list = field(default_factory=lambda: [1, 10, 40])
    strategies: list = field(default_factory=lambda: ["random"])
    logits: list = field(default_factory=lambda: ["fp16"])
    granularity: str = "batch"
    pool: str = "prefix"
    replay: str | None = None


@dataclass
class ValidateConfig:
    """Student training on synthetic images + stored (pruned) soft labels.

    Attributes:
        model: the student architecture.
        students: several student architectures (LPLD's cross-architecture evaluation, Table 4): each is
            trained on the same images and label stores and gets its own rows under
            ``validate/<student-tag>/``. Empty (the default) = ``[model]``; when set, it replaces ``model``.
            Items are model specs (``{name, args}`` or a bare name), optionally with their own ``lr``,
            ``optimizer``, ``epochs`` and ``weight_decay`` (:class:`StudentSpec`; unset = this section's values).
        epochs: training epochs; ``None`` = the store's stored epochs.
        optimizer: ``adamw`` or ``sgd``.
        lr: peak learning rate (cosine-annealed to 0).
        weight_decay: optimizer weight decay (on parameters of two or more dimensions only, unless
            ``weight_decay_1d``).
        weight_decay_1d: also decay 1-D parameters (BatchNorm weights and biases, every bias). ``false`` (the
            default) exempts them, as the LPLD / SRe2L reference students do (LPLD ``relabel_and_validate/utils.py``,
            ``get_parameters``); ``true`` is the behaviour before this key existed.
        schedule: ``cosine_epoch`` (the default: the learning rate is set once per epoch and is constant within
            it, as LPLD's ``train_FKD_label_pruning_batch.py`` steps its ``LambdaLR`` once per epoch),
            ``cosine_step`` (set at every step: the behaviour before this key existed) or ``step`` (DC's
            ``evaluate_synset``: ``lr`` until epoch ``ceil(E / 2)``, then ``0.1 · lr``; no warm-up).
        warmup_epochs: linear warm-up from ``0.01 · lr`` over this many epochs before the cosine, as the LPLD
            Tiny-ImageNet SGD student does (``LinearLR(start_factor=0.01)`` for 5 epochs); ``0`` (the default): none.
        eval_every: also score the student on the eval split every this many epochs (row field ``history``);
            ``None`` (the default): only after the last epoch. The reported top-1 is always the last epoch's.
        repeats: train this many fresh students per store (student seeds ``seed + r``, ``r = 0 … repeats − 1``):
            extra validate units on the same stores, reported as mean ± std; nothing upstream is recomputed.
        temperature: KD temperature ``T``.
        t2_scale: multiply the KL loss by ``T²`` (Hinton et al.; the LPLD Tiny recipe does, its ImageNet
            recipe does not).
        eval_batch_size: batch size on the real split the student is scored on.
        eval_split: the real split the student is scored on: ``test`` (the default) or ``holdout`` (the
            images ``data.holdout`` holds out of the train split; for choosing hyperparameters without looking
            at the test split).
        checkpoint_seconds: save a resume checkpoint at the end of an epoch at most this often.
        loss: the student's loss against the stored soft labels: ``kl`` (``T² · KL``, the default),
            ``soft_ce`` (soft cross-entropy, ``T²``-scaled like ``kl``) or ``gift`` (GIFT-style cosine loss
            against a mix of soft label and smoothed hard label; :func:`labeldistill.validate.gift_loss`).
        gift_alpha: weight of the soft label in the GIFT-style target (``loss: gift`` only).
        gift_smoothing: label smoothing of the hard label in the GIFT-style target (``loss: gift`` only).
        label_source: where the student's soft labels come from: ``stored`` (the label store, the default),
            ``generator`` (the run's small label model, trained by the ``generator`` stage, run on each replayed
            batch), ``online`` (the full teacher run on each replayed batch: the upper reference) or ``static``
            (the per-image logits a ``tensor`` set was imported with, softened with ``softmax(z / T)`` as
            DD-Ranking does; the replayed augmentation changes the pixels only; every recover mode must be a
            ``tensor`` source). The row's ``label_bytes`` are the store's bytes on disk, the label model's weights
            file, or (``static``) the per-image logits file.
        calibration: ``none`` (the default) or ``lpqld``: LPQLD's temperature calibration (a step-decayed teacher
            temperature on the labels and a searched student temperature;
            :mod:`labeldistill.labels.calibration`). Needs ``loss: kl``.
        lpqld_step: ``lpqld``: the teacher temperature is multiplied by ``lpqld_gamma`` every this many epochs.
        lpqld_gamma: ``lpqld``: the decay factor of the teacher temperature.
        lpqld_min_temperature: ``lpqld``: the teacher temperature never falls below this.
        lpqld_student_temperature: ``lpqld``: the student temperature of the first epoch (and of every epoch when
            ``lpqld_student_search`` is false).
        lpqld_student_search: ``lpqld``: after each epoch, set the student temperature to the value in
            ``0.01, 0.02, ..., 1.0`` that minimises the KL loss on the epoch's last batch.
        parallel: how validate uses the ranks of a torchrun job: ``data`` (the default: each student is trained
            data-parallel over every rank, each stored step split ``rank::world``, evaluation sharded over the
            ranks) or ``students`` (each rank trains whole students: the validate units go round-robin to the
            ranks, each run as a single process, so its rows equal a one-process run's). No effect without torchrun.
        protocol: an evaluation protocol preset (``dc``, ``dsa``, ``sre2l``, ``lpld``, ``ddranking``;
            :mod:`labeldistill.protocols`) that sets the student and its recipe the way that table evaluates;
            ``None`` (the default): this section's keys as given. Rows record it (``protocol``).
        sync_bn: ``parallel: data`` under torchrun: convert the student's BatchNorm layers to SyncBatchNorm (batch
            statistics over the whole global batch, as one process computes them; CUDA only).
    """

    model: ModelConfig = field(default_factory=lambda: ModelConfig("convnet", {"width": 32}))
    students: list = field(default_factory=list)
    epochs: int | None = None
    optimizer: str = "adamw"
    lr: float = 0.002
    weight_decay: float = 0.01
    momentum: float = 0.9
    temperature: float = 4.0
    t2_scale: bool = True
    eval_batch_size: int = 1000
    checkpoint_seconds: float = 30.0
    loss: str = "kl"
    gift_alpha: float = 0.5
    gift_smoothing: float = 0.1
    label_source: str = "stored"
    calibration: str = "none"
    lpqld_step: int = 30
    lpqld_gamma: float = 0.7
    lpqld_min_temperature: float = 2.0
    lpqld_student_temperature: float = 1.0
    lpqld_student_search: bool = True
    eval_split: str = "test"
    parallel: str = "data"
    sync_bn: bool = False
    weight_decay_1d: bool = False
    schedule: str = "cosine_epoch"
    warmup_epochs: int = 0
    eval_every: int | None = None
    repeats: int = 1
    protocol: str | None = None


@dataclass
class GeneratorConfig:
    """The label generator (``validate.label_source: generator``): a small model trained to reproduce the
    teacher's stored logits on the stored augmentations of ``labels/<mode>/full`` (KD loss), then run in place of
    the store by validate. Its bytes are its weights file.

    Attributes:
        model: the label model (any registry model; small, since its weights are the labels' cost).
        epochs: passes over every stored step.
        optimizer: ``adamw`` or ``sgd``.
        lr: peak learning rate (cosine-annealed to 0).
        weight_decay: optimizer weight decay.
        temperature: KD temperature ``T`` of its loss ``T² · KL(softmax(t / T) ‖ softmax(g / T))``.
        checkpoint_seconds: save a resume checkpoint at the end of an epoch at most this often.
    """

    model: ModelConfig = field(default_factory=lambda: ModelConfig("convnet", {"width": 8, "depth": 3,
                                                                            "norm": "batch"}))
    epochs: int = 20
    optimizer: str = "adamw"
    lr: float = 0.005
    weight_decay: float = 0.0
    momentum: float = 0.9
    temperature: float = 4.0
    checkpoint_seconds: float = 30.0


@dataclass
class HardLabelConfig:
    """Hard-label baselines for DD-Ranking's hard label recovery (HLR; Li et al. 2025, arXiv 2505.13300, §3):
    the student trained with cross-entropy on class labels, once on each mode's images and once on the real
    train split; written to ``hard_label/<student>/<images>.json`` (see :func:`labeldistill.validate.hard_label`).

    Protocol (this project's, not DD-Ranking's code): the ``validate`` student, optimiser, learning rate and
    weight decay, a cosine schedule, batches of ``relabel.batch_size``, RandomResizedCrop(``relabel.crop_scale``)
    + flip (``relabel.flip``), no CutMix; the last epoch's model is evaluated (no selection on the test split).

    Attributes:
        enabled: the main job (``labeldistill run``) also writes the baselines, per seed.
        real: also train on the real train split (the ``real-hard`` accuracy of HLR).
        real_epochs: epochs over the real train split. The distilled images get ``validate.epochs`` (default:
            ``relabel.epochs``), the epochs their soft labels get.
    """

    enabled: bool = False
    real: bool = True
    real_epochs: int = 2


VALIDATE_LOSSES = ("kl", "soft_ce", "gift")
LABEL_SOURCES = ("stored", "generator", "online", "static")
CALIBRATIONS = ("none", "lpqld")
EVAL_SPLITS = ("test", "holdout")
AUTOCAST_MODES = ("bf16", "off")
SCHEDULES = ("cosine_epoch", "cosine_step", "step")
"""The choices of ``validate.loss``, ``validate.label_source``, ``validate.calibration``, ``validate.eval_split``,
``autocast`` and ``validate.schedule`` (checked by :mod:`labeldistill.config.checks`)."""


def student_specs(vc: ValidateConfig) -> list[ModelConfig]:
    """The students a config validates with: ``validate.students``, or ``[validate.model]`` when it is empty."""
    return list(vc.students) or [vc.model]


@dataclass
class StudentSpec(ModelConfig):
    """One entry of ``validate.students``: a model spec with its own training recipe; a recipe key left ``None``
    takes the ``validate`` section's value."""

    lr: float | None = None
    optimizer: str | None = None
    epochs: int | None = None
    weight_decay: float | None = None


STUDENT_RECIPE = ("lr", "optimizer", "epochs", "weight_decay")
"""The ``validate`` keys a ``validate.students`` entry may set for itself."""


def with_student(cfg: Any, spec: ModelConfig) -> Any:
    """A copy of ``cfg`` that validates with ``spec`` alone (``validate.model = spec``, no ``students``, and the
    recipe keys a :class:`StudentSpec` sets in place of the section's): the config one student's results are made
    and fingerprinted with, so that adding a student to the list leaves the others' results fresh. A spec without
    recipe keys becomes a plain :class:`ModelConfig` (its settings as before the recipe keys existed)."""
    recipe = {k: getattr(spec, k) for k in STUDENT_RECIPE if getattr(spec, k, None) is not None}
    model = spec if recipe else ModelConfig(spec.name, dict(spec.args))
    return dataclasses.replace(cfg, validate=dataclasses.replace(cfg.validate, model=model, students=[], **recipe))


@dataclass
class RunConfig:
    """Settings every job has: where it runs and with what randomness and hardware.

    Attributes:
        name: run name; the run directory is ``runs/<name>`` unless ``run_dir`` is set.
        run_dir: explicit run directory.
        seed: seed of every random stream of the job.
        device: ``auto`` (CUDA, then MPS, then CPU) or a torch device string.
        threads: ``torch.set_num_threads`` value; ``None`` keeps torch's default.
    """

    name: str = "experiment"
    run_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    threads: int | None = None

    @property
    def run_path(self) -> Path:
        """The run directory (``runs/<name>`` unless ``run_dir`` is set)."""
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


@dataclass
class Config(RunConfig):
    """A whole experiment of the main job: one run directory, every stage's settings.

    ``seeds``: run the whole job once per seed, each in ``<run_dir>/seed<k>/`` with ``seed = k``, and report
    mean ± std over them (``null`` = one run with ``seed``).

    ``autocast``: ``bf16`` (default) runs the teacher and student forward passes of squeeze, class-stats,
    recover, relabel and validate under bf16 autocast on CUDA; ``off`` runs them in float32. CPU and MPS run in
    float32 either way.

    ``deterministic``: ``true`` makes CUDA use deterministic kernels (:func:`labeldistill.runtime.set_deterministic`:
    ``torch.use_deterministic_algorithms``, deterministic cuDNN without benchmarking, ``CUBLAS_WORKSPACE_CONFIG``),
    slower; ``false`` (default) leaves CUDA's fast kernels. A no-op on CPU and MPS, whose runs are byte-identical
    on resume and under torchrun either way.
    """

    seeds: list | None = None
    autocast: str | bool = "bf16"  # YAML reads a bare off / on as False / True: the loader maps them (resolve_config)
    deterministic: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    squeeze: SqueezeConfig = field(default_factory=SqueezeConfig)
    class_stats: ClassStatsConfig = field(default_factory=ClassStatsConfig)
    recover: RecoverConfig = field(default_factory=RecoverConfig)
    relabel: RelabelConfig = field(default_factory=RelabelConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    hard_label: HardLabelConfig = field(default_factory=HardLabelConfig)
