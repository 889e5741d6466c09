"""Progress bars draw on a terminal only: logs, CI output and redirected files stay free of bar lines."""

from __future__ import annotations

import io
from pathlib import Path

from ignite.engine import Engine
from monai.bundle import ConfigParser

from mckd.progress import progress_bar

INFERENCE = (
    Path(__file__).resolve().parents[2] / "bundle" / "brats_mri_mckd_segmentation" / "configs" / "inference.json"
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _draw(stream: io.StringIO) -> str:
    with progress_bar(3, "cases", unit="case", file=stream) as bar:
        for _ in range(3):
            bar.update(1)
    return stream.getvalue()


def test_a_bar_is_drawn_on_a_terminal_and_nothing_elsewhere():
    assert "cases:" in _draw(_Terminal()) and "/3 [" in _draw(_Terminal())
    assert _draw(io.StringIO()) == ""


def _run_inference_bar(stream: io.StringIO) -> str:
    """The inference config's progress bar attached to an engine of 3 iterations, drawing on ``stream``."""
    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    index = next(i for i, h in enumerate(parser["handlers"]) if "ProgressBar" in str(h.get("_target_", "")))
    bar = parser.get_parsed_content(f"handlers#{index}")
    bar.tqdm_kwargs["file"] = stream
    engine = Engine(lambda engine, batch: None)
    bar.attach(engine)
    engine.run([0, 1, 2])
    return stream.getvalue()


def test_inference_draws_a_bar_over_the_cases_on_a_terminal_only():
    assert "cases" in _run_inference_bar(_Terminal())
    assert _run_inference_bar(io.StringIO()) == ""
