"""MONAI's ``ckpt_export`` (TorchScript export of a bundle network), the checkpoint checked by the safe loader first.

``python -m monai.bundle ckpt_export`` loads ``--ckpt_file`` with ignite's ``Checkpoint.load_objects``
(``torch.load(..., weights_only=True)``), so a bad file ends in PyTorch's message without the file name: a truncated
or empty file in ``PytorchStreamReader failed reading zip archive`` / ``EOFError``, a pickled payload in
``Weights only load failed ...`` with the advice to re-run with ``weights_only=False`` (which would run the file's
code), a checkpoint of another configuration in ``Error(s) in loading state_dict``. MONAI's command cannot be given
another loader, so this module is the documented export command: it takes the same arguments, builds the network
from the config as MONAI does, loads the checkpoint into it with :func:`mckd.checkpoints.load_objects` (a
:class:`~mckd.checkpoints.CheckpointError` naming the file and the cause, logged as one line, exit status 1), and
then runs MONAI's ``ckpt_export`` unchanged::

    python -m mckd.ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt \\
        --meta_file configs/metadata.json --config_file configs/inference.json

``--key_in_ckpt`` names the network's entry of a training checkpoint (e.g. ``model`` of ``model_final.pt``);
``models/model.pt`` is the network's state dict and needs none. The TorchScript file may not be one of the inputs
(checkpoint, configs, metadata): the export would overwrite it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle.scripts import ckpt_export as monai_ckpt_export
from monai.bundle.scripts import update_kwargs

from mckd.checkpoints import CheckpointError, load_objects
from mckd.fileio import ensure_not_input

__all__ = ["check_export_checkpoint", "ckpt_export", "main"]

logger = logging.getLogger("mckd.ckpt_export")

#: Arguments of MONAI's ``ckpt_export`` that are not config overrides.
_EXPORT_ARGUMENTS = (
    "net_id",
    "filepath",
    "ckpt_file",
    "meta_file",
    "config_file",
    "key_in_ckpt",
    "use_trace",
    "input_shape",
    "args_file",
    "converter_kwargs",
)


def check_export_checkpoint(**kwargs: Any) -> None:
    """Load the checkpoint that MONAI's ``ckpt_export`` would export into the network it would build.

    Resolves the arguments as MONAI does (``--args_file`` merged, ``ckpt_file`` default
    ``<bundle_root>/models/model.pt``, ``net_id`` default ``network_def``, the other keys override the config).

    Raises:
        CheckpointError: when the file is absent, unreadable, holds a pickled object, or does not fit the network
            (its ``key_in_ckpt`` entry absent, other keys or shapes), naming the file and the cause.
        ValueError: when ``filepath`` or ``config_file`` is missing, or ``filepath`` is one of the inputs.
    """
    arguments = update_kwargs(args=kwargs.pop("args_file", None), **kwargs)
    for required in ("filepath", "config_file"):
        if not arguments.get(required):
            raise ValueError(f"--{required} is required (see python -m mckd.ckpt_export --help).")
    overrides = {k: v for k, v in arguments.items() if k not in _EXPORT_ARGUMENTS}
    bundle_root = overrides.get("bundle_root", os.getcwd())
    parser = ConfigParser()
    parser.read_config(f=arguments["config_file"])
    for key, value in overrides.items():
        parser[key] = value
    network = parser.get_parsed_content(arguments.get("net_id") or "network_def")
    path = arguments.get("ckpt_file") or os.path.join(bundle_root, "models", "model.pt")
    configs = arguments["config_file"]
    inputs = [path, *([configs] if isinstance(configs, str) else configs)]
    ensure_not_input(
        arguments["filepath"], [*inputs, *([arguments["meta_file"]] if arguments.get("meta_file") else [])]
    )
    load_objects({arguments.get("key_in_ckpt") or "": network}, path, map_location="cpu")


def ckpt_export(net_id: str | None = None, **kwargs: Any) -> None:
    """Check the checkpoint (:func:`check_export_checkpoint`), then run MONAI's ``ckpt_export`` with the arguments.

    Raises:
        CheckpointError: see :func:`check_export_checkpoint`; nothing is written then.
    """
    check_export_checkpoint(net_id=net_id, **kwargs)
    monai_ckpt_export(net_id=net_id, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """Command line: the arguments of ``python -m monai.bundle ckpt_export``; 1 and one line for a bad file."""
    from fire import Fire

    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    try:
        Fire(ckpt_export, command=argv, name="python -m mckd.ckpt_export")
    except (CheckpointError, ValueError) as err:
        logger.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
