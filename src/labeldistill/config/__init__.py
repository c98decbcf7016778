"""Typed experiment configs, in three parts (no torch):

- :mod:`~labeldistill.config.schema`: the sections as typed dataclasses, each key documented (what to read to
  learn a key; where to add one);
- :mod:`~labeldistill.config.loader`: YAML file + dotted ``key=value`` overrides → those dataclasses (generic:
  ``learn-labels`` uses it too), then the one resolve step (:func:`resolve_config`) and the checks;
- :mod:`~labeldistill.config.checks`: one check per section (``check_<section>``) and the rules across sections,
  called by :func:`check_config`; checks read the config and never change it.

This package exports the names a user or a stage needs (``from labeldistill.config import Config, load_config``).
"""

from .checks import check_config, check_data, check_squeeze
from .loader import config_to_dict, dump_config, load_config, load_typed_config, resolve_config
from .schema import (
    AUTOCAST_MODES,
    CALIBRATIONS,
    EVAL_SPLITS,
    LABEL_SOURCES,
    SCHEDULES,
    STUDENT_RECIPE,
    VALIDATE_LOSSES,
    ClassStatsConfig,
    Config,
    DataConfig,
    GeneratorConfig,
    HardLabelConfig,
    ModelConfig,
    PruneConfig,
    RecoverConfig,
    RelabelConfig,
    RunConfig,
    SqueezeConfig,
    StudentSpec,
    ValidateConfig,
    student_specs,
    with_student,
)

__all__ = [
    "AUTOCAST_MODES", "CALIBRATIONS", "EVAL_SPLITS", "LABEL_SOURCES", "SCHEDULES", "STUDENT_RECIPE", "VALIDATE_LOSSES",
    "ClassStatsConfig", "Config", "DataConfig", "GeneratorConfig", "HardLabelConfig", "ModelConfig", "PruneConfig",
    "RecoverConfig", "RelabelConfig", "RunConfig", "SqueezeConfig", "StudentSpec", "ValidateConfig",
    "check_config", "check_data", "check_squeeze", "config_to_dict", "dump_config", "load_config",
    "load_typed_config", "resolve_config", "student_specs", "with_student",
]
