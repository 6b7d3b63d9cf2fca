"""Silence third-party adverts and deprecation noise that says nothing about a lengen run.

Each filter names the message it drops and why it is safe; anything else still prints.
"""

from __future__ import annotations

import logging
import warnings

# Lightning >= 2.5 prints "💡 Tip: ..." adverts for its cloud products (litlogger, litmodels)
# through its rank-zero logger on every Trainer; they are not about the run.
ADVERT_PREFIX = "💡 Tip:"
RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERT_PREFIX)


_DROP_ADVERTS = _DropAdverts()


class _DropSeedLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Seed set to")


_DROP_SEED_LINE = _DropSeedLine()


def silence_known_noise(subcommand: str | None = None) -> None:
    """Install the filters (idempotent); called by the `lengen` command and by lengen.api."""
    # `datasets` draws a progress bar for every small evaluation set it saves and every corpus
    # it tokenises; lengen's own lines say what is built.
    import datasets  # already imported by the data modules that `lengen` loads

    datasets.disable_progress_bars()
    # "Seed set to N" from LightningCLI's seed_everything: the seed is in the run's config.yaml
    # and results.json, and the line would precede a bad-input error line.
    seed_logger = logging.getLogger("lightning.fabric.utilities.seed")
    if _DROP_SEED_LINE not in seed_logger.filters:
        seed_logger.addFilter(_DROP_SEED_LINE)
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _DROP_ADVERTS not in logger.filters:
            logger.addFilter(_DROP_ADVERTS)
    # torch 2.13 deprecates constructing `LeafSpec`; lightning/pytorch/utilities/_pytree.py still
    # does (FutureWarning "`isinstance(treespec, LeafSpec)` is deprecated"): Lightning's to fix.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    # Metric instances cannot be written to hparams.yaml; the run's config (config.yaml of the
    # CLI, results.json) records them, so Lightning's notice that it skips them says nothing.
    warnings.filterwarnings("ignore", message=r"Skipping 'metrics' parameter because")
    # Evaluating a checkpoint from an earlier version folder: every lengen run claims a new folder,
    # so ModelCheckpoint's "The dirpath has changed from ... won't be reloaded" is always true and
    # harmless when nothing is trained. Kept for fit: resuming into a new folder does forget the
    # best-k bookkeeping of a monitored checkpoint.
    if subcommand in ("validate", "test", "predict"):
        warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
