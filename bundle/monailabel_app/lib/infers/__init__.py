"""Infer tasks of the MCKD MONAI Label app."""

from lib.infers.mckd_bundle import MCKDBundleConstants, MCKDBundleInferTask

__all__ = ["MCKDBundleConstants", "MCKDBundleInferTask"]
