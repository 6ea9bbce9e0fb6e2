"""`autointerp calibrate`: planted latents with known meaning, to check that scorers and explainer work."""

from autointerp.calibrate.classes import BUILTIN_CLASSES, TokenClass, classes_named
from autointerp.calibrate.output import scorer_rows
from autointerp.calibrate.plant import PlantSettings
from autointerp.calibrate.stage import CalibrationReport, calibration_dir, run_calibrate

__all__ = [
    "BUILTIN_CLASSES",
    "CalibrationReport",
    "PlantSettings",
    "TokenClass",
    "calibration_dir",
    "classes_named",
    "run_calibrate",
    "scorer_rows",
]
