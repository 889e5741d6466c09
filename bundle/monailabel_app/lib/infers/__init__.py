"""Infer tasks of the MCKD MONAI Label app."""

from lib.infers.mckd_bundle import MCKDBundleConstants, MCKDBundleInferTask, post_processed_labels

__all__ = ["MCKDBundleConstants", "MCKDBundleInferTask", "post_processed_labels"]
