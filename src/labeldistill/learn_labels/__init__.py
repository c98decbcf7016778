"""Label distillation: learn soft labels for a few fixed real base examples.

"Flexible Dataset Distillation: Learn Labels Instead of Images" (Bohdal, Yang & Hospedales, 2020,
arXiv 2006.08572). Two meta-learners:

- **LD** (:mod:`.ld`): second order, through an unrolled inner SGD step (``torch.func.functional_call``);
- **RR** (:mod:`.rr`): first order, through a closed-form ridge-regression head on penultimate features;
- **DD** (:mod:`.dd`, ``methods: [dd]``): the image-learning baseline (Wang et al. 2018) on LD's machinery;

within a dataset or across datasets (base examples from a source dataset, labels over the target classes),
compared with one-hot, label-smoothing and teacher pseudo-label baselines on the same base examples
(:mod:`.metatest`). Command line: ``labeldistill learn-labels CONFIG [key=value ...]``; Python::

    from labeldistill.learn_labels import load_ld_config, learn_labels
    results = learn_labels(load_ld_config("configs/fmnist_ld_small.yaml", ["metatest.repeats=3"]))
"""

from .base_examples import select_base_examples
from .config import LearnLabelsConfig, load_ld_config
from .dd import DDMetaLearner, LearnedImages
from .labels import LearnedLabels, soft_cross_entropy
from .ld import LDMetaLearner, unrolled_outer_loss
from .meta import MetaResult, meta_train
from .rr import RRLearner, RRMetaLearner, ridge_solve
from .run import learn_labels, learn_labels_main

__all__ = [
    "DDMetaLearner", "LDMetaLearner", "LearnLabelsConfig", "LearnedImages", "LearnedLabels", "MetaResult",
    "RRLearner", "RRMetaLearner", "learn_labels", "learn_labels_main", "load_ld_config", "meta_train", "ridge_solve", "select_base_examples",
    "soft_cross_entropy", "unrolled_outer_loss",
]
