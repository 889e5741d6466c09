"""The benchmark runner: load sampling, the busy verdict, refusal of a busy machine, flagged reports, a real section."""

from __future__ import annotations

from pathlib import Path

import pytest

import benchmarks.__main__ as runner
import benchmarks.load as load
from benchmarks.load import LoadMonitor, LoadSample, SectionLoad, foreign_running_threads


def _section(foreign: list[int], every: float = 2.0) -> SectionLoad:
    return SectionLoad("s", [LoadSample(i * every, 1.0, f) for i, f in enumerate(foreign)])


def _fake_proc(root: Path, running: int, tasks: dict[int, tuple[int, list[str]]]) -> None:
    """A /proc with ``procs_running`` and processes ``pid -> (ppid, [state of each thread])``."""
    root.mkdir()
    (root / "stat").write_text(f"cpu  1 2 3\nprocs_running {running}\nprocs_blocked 0\n")
    for pid, (ppid, states) in tasks.items():
        (root / str(pid) / "task").mkdir(parents=True)
        (root / str(pid) / "stat").write_text(f"{pid} (py thon) S {ppid} 1 1\n")
        for i, state in enumerate(states):
            (root / str(pid) / "task" / str(pid + i)).mkdir()
            (root / str(pid) / "task" / str(pid + i) / "stat").write_text(f"{pid + i} (py) thon) {state} {ppid}\n")


def test_foreign_threads_are_the_running_ones_outside_the_process_tree(tmp_path, monkeypatch):
    _fake_proc(tmp_path / "proc", 6, {100: (1, ["R", "S"]), 101: (100, ["R", "R"]), 102: (101, ["R"]), 200: (1, ["R"])})
    monkeypatch.setattr(load, "PROC", tmp_path / "proc")
    assert foreign_running_threads(root=100) == 2  # 6 running, 4 of them in the tree of 100
    assert foreign_running_threads(root=200) == 5


def test_a_section_is_busy_when_foreign_work_exceeds_the_free_cores_over_a_window():
    monitor = LoadMonitor(threads=2, cores=2, window=10.0, tolerance=0.5)
    assert monitor.threshold == 0.5
    assert not monitor.busy(_section([0, 1, 0, 0, 0, 0, 1, 0, 0, 0]))  # short blips average out
    assert monitor.busy(_section([0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0]))  # one busy 10-s stretch is enough
    assert not monitor.busy(SectionLoad("unknown", [LoadSample(0.0, 9.0, None)]))
    assert LoadMonitor(threads=1, cores=4, tolerance=0.5).threshold == 3.5


def test_sections_collect_the_samples_taken_inside_them(monkeypatch):
    monkeypatch.setattr(load, "foreign_running_threads", lambda root=None: 3)
    monitor = LoadMonitor(threads=2, cores=2, interval=0.01)
    with monitor, monitor.section("work") as section:
        while len(section.samples) < 4:
            pass
    assert section.foreign_mean() == 3 and monitor.busy_sections() == ["work"]
    assert section.load1_max() is not None


def _fake_section(s: dict, threads: int) -> list[str]:
    return ["## fake section", "", f"rounds {s['rounds']}", ""]


def test_runner_refuses_a_busy_machine_before_measuring(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(load, "foreign_running_threads", lambda root=None: 4)
    out = tmp_path / "RESULTS.md"
    assert runner.main(["--quick", "--only", "inference", "--probe-seconds", "0", "--out", str(out)]) == 2
    assert "refused" in capsys.readouterr().err and not out.exists()


def test_runner_flags_the_sections_measured_while_the_machine_was_busy(tmp_path, monkeypatch):
    monkeypatch.setitem(runner.SECTIONS, "inference", _fake_section)
    monkeypatch.setattr(load, "foreign_running_threads", lambda root=None: 4)
    out = tmp_path / "RESULTS.md"
    status = runner.main(["--quick", "--only", "inference", "--allow-busy", "--probe-seconds", "0", "--out", str(out)])
    report = out.read_text()
    assert status == 3
    assert "**FLAGGED: other processes kept the machine busy during probe, inference" in report
    assert "## fake section" in report and "| inference |" in report
    assert "| sliding window 4x64x128x128, tiles 32x64x64, overlap 1/3 (27 tiles): 4 of 4 | 16.1 | 17.0 |" in report


def test_runner_reports_a_quiet_run_as_quiet(tmp_path, monkeypatch):
    monkeypatch.setitem(runner.SECTIONS, "inference", _fake_section)
    monkeypatch.setattr(load, "foreign_running_threads", lambda root=None: 0)
    out = tmp_path / "RESULTS.md"
    assert runner.main(["--only", "inference", "--probe-seconds", "0", "--out", str(out)]) == 0
    assert "Quiet run" in out.read_text() and "rounds 5" in out.read_text()


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--only", "nothing"], ["--probe-seconds", "-1"]])
def test_runner_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit):
        runner.parse_args(argv)


def test_a_real_section_measures_and_renders_its_table():
    """The light network's inference options, measured for real on a tiny volume (the section of ``--quick``)."""
    settings = dict(runner._settings(quick=True), volume=[32, 48, 48], roi=[32, 32, 32], rounds=1)
    lines = runner.options_section(settings, threads=2)
    rows = {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in lines if line.startswith("| "))}
    default = rows["baseline (sw_batch_size 1, overlap 0.25, gaussian, fp32)"]
    assert default[1] == "1.000" and float(default[2]) == 0.0
    assert float(rows["sw_batch_size 4"][2]) < 1e-5  # same output, more windows per forward
    assert 0 < float(rows["bfloat16 autocast"][2]) < 0.05
