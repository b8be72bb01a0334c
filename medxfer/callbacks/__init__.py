"""Analysis callbacks: calibration, subgroup gaps, CKA, weight drift and convergence; the
per-case prediction writers and the per-epoch progress line.

Each is task-agnostic (it reads the step outputs of DESIGN.md's batch contract or the
backbone's declared stages), computes in float32 whatever the training precision, gives the
same numbers on one process and on N DDP ranks, and writes its results as JSON in
``<run folder>/analysis``. Use them from a config::

    trainer:
      callbacks:
        - class_path: medxfer.callbacks.CalibrationCallback
        - class_path: medxfer.callbacks.SubgroupCallback
          init_args: {attributes: [sex, age], min_size: 30}
"""

from __future__ import annotations

from .base import EvalSetCallback, analysis_dir, is_last_validation, write_json
from .calibration import CalibrationCallback
from .convergence import ConvergenceCallback
from .masks import MaskWriter
from .predictions import PredictionWriter, case_probabilities
from .progress import EpochProgress
from .representation import CKACallback, WeightDriftCallback
from .subgroups import SubgroupCallback

__all__ = [
    "CKACallback",
    "CalibrationCallback",
    "ConvergenceCallback",
    "EpochProgress",
    "EvalSetCallback",
    "MaskWriter",
    "PredictionWriter",
    "SubgroupCallback",
    "WeightDriftCallback",
    "analysis_dir",
    "case_probabilities",
    "is_last_validation",
    "write_json",
]
