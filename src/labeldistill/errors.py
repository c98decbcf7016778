"""Project exceptions: errors a user can cause, each with a message that says what and how to fix.

The CLI turns every :class:`LabelDistillError` into one line on stderr and exit code 2.
"""


class LabelDistillError(Exception):
    """Base class for user-facing errors (bad config, bad data, mismatched artifacts)."""


class ConfigError(LabelDistillError):
    """Unknown key, wrong type or out-of-range value in a config or override."""


class DataError(LabelDistillError):
    """Missing, empty or corrupt dataset files."""


class StoreError(LabelDistillError):
    """Missing, corrupt or mismatched label store."""


class RegistryError(LabelDistillError):
    """Unknown name in a registry (dataset, model)."""


class StaleStageError(LabelDistillError):
    """A finished stage's output was made with other settings than the current config's."""
