"""The subject model: loading and reading activations at hookpoints."""

from autointerp.subject.hooks import ActivationReader, Tap, find_module
from autointerp.subject.model import Subject, load_subject

__all__ = ["ActivationReader", "Subject", "Tap", "find_module", "load_subject"]
