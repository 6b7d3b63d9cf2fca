"""The default logger of `lengen`: TensorBoard, with version folders claimed atomically.

Lightning's TensorBoardLogger picks `version_N` as one more than the largest folder it lists and
creates the folder only when it first writes, so runs started together with the same
`default_root_dir` can pick the same folder. `ClaimingTensorBoardLogger` claims its folder with
`os.mkdir`, which fails for every process but one (create-exclusive), and tries the next number
until it owns one. It also flushes the event file after each `log_metrics`, so a run killed with
SIGKILL loses no logged step that reached the logger.
"""

from __future__ import annotations

import os

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import TensorBoardLogger


class ClaimingTensorBoardLogger(TensorBoardLogger):
    """A TensorBoardLogger whose `version_N` folder is created exclusively by this run.

    Only global rank 0 claims a folder; the other ranks take rank 0's, which Lightning
    broadcasts (`trainer.log_dir`, the checkpoint folder). Remote save_dirs (`s3://...`) keep
    Lightning's listing-based choice.
    """

    def _get_next_version(self) -> int:
        version = super()._get_next_version()  # one more than the largest listed
        if rank_zero_only.rank != 0 or "://" in str(self.root_dir):
            return version
        os.makedirs(self.root_dir, exist_ok=True)
        while True:
            try:
                os.mkdir(os.path.join(self.root_dir, f"version_{version}"))
                return version
            except FileExistsError:  # another run claimed it first
                version += 1

    @rank_zero_only
    def log_metrics(self, metrics, step=None) -> None:
        super().log_metrics(metrics, step)
        self.experiment.flush()
