"""Training of sparse coders that cannot be downloaded: a sparsify TopK SAE per hookpoint, trained once."""

from autointerp.rundir import TRAINING_FILE
from autointerp.training.stage import TrainReport, ensure_coders, training_key

__all__ = ["TRAINING_FILE", "TrainReport", "ensure_coders", "training_key"]
