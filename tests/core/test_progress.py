"""Progress bars draw on a terminal only: logs, CI output and redirected files stay free of bar lines."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

from mckd.progress import TrainingProgress, progress_bar

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


def _train_with_progress(tmp_path, stream) -> list[str]:
    """Three iterations whose StatsHandler-style lines go through ``mckd.training``; the lines the root logger saw."""
    seen: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    root = logging.getLogger()
    collector = _Collect()
    root.addHandler(collector)
    trainer = Engine(lambda engine, batch: {"loss": 0.5})
    TrainingProgress(tmp_path, stream=stream).attach(trainer)
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: logging.getLogger("mckd.training").info("iteration %d", e.state.iteration)
    )
    try:
        trainer.run([0, 1, 2], max_epochs=1)
    finally:
        root.removeHandler(collector)
    return seen


def test_training_on_a_terminal_draws_one_bar_and_logs_iterations_to_the_file_only(tmp_path):
    terminal = _Terminal()
    seen = _train_with_progress(tmp_path, terminal)
    assert "training" in terminal.getvalue() and "3/3" in terminal.getvalue()
    assert not [line for line in seen if line.startswith("iteration")]
    assert (tmp_path / "training.log").read_text().count(" - INFO - iteration ") == 3


def test_training_off_a_terminal_keeps_the_log_lines_and_draws_nothing(tmp_path):
    stream = io.StringIO()
    seen = _train_with_progress(tmp_path, stream)
    assert stream.getvalue() == ""
    assert [line for line in seen if line.startswith("iteration")] == ["iteration 1", "iteration 2", "iteration 3"]
    assert (tmp_path / "training.log").read_text().count(" - INFO - iteration ") == 3
