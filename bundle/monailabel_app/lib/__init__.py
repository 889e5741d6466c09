"""Python package of the MCKD MONAI Label app (MONAI Label imports an app's code as ``lib``)."""
