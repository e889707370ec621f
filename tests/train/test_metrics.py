import json
from pathlib import Path

import pytest

from implicit_jax.train.metrics import MetricsWriter, plot_metrics, read_metrics


def test_writer_drops_records_past_the_resume_step_and_plots(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    writer = MetricsWriter(path)
    for step in range(1, 6):
        writer.write({"step": step, "time": 0.1 * step, "loss": 1.0 / step, "accuracy": 0.1 * step, "bad": float("nan")})
    writer.write({"step": 5, "time": 0.5, "test_accuracy": 0.4, "test_loss": 0.9})
    assert read_metrics(path)[0]["bad"] is None
    MetricsWriter(path, resume_step=3).write({"step": 4, "time": 0.4, "loss": 0.2, "accuracy": 0.5})
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]
    assert all(json.loads(line) for line in Path(path).read_text().splitlines())
    written = plot_metrics(path, str(tmp_path))
    assert [p.rsplit("/", 1)[-1] for p in written] == ["loss.png", "accuracy.png"]
    MetricsWriter(path)  # a fresh run starts a fresh file
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_torn_last_line_is_dropped_with_a_warning_and_other_bad_lines_are_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo')
    with pytest.warns(RuntimeWarning, match=r"metrics.jsonl:3: dropped a torn last record"):
        assert [r["step"] for r in read_metrics(str(path))] == [1, 2]
    with pytest.warns(RuntimeWarning, match="torn last record"):
        MetricsWriter(str(path), resume_step=2).write({"step": 3, "loss": 0.25})
    assert [r["step"] for r in read_metrics(str(path))] == [1, 2, 3]  # the resumed file is whole again
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not a JSON record"):
        read_metrics(str(path))


def test_truncate_warns_when_it_drops_records(tmp_path):
    writer = MetricsWriter(str(tmp_path / "m.jsonl"))
    for step in (2, 4, 6):
        writer.write({"step": step})
    with pytest.warns(RuntimeWarning, match="dropped 2 record"):
        writer.truncate(2)
    assert [r["step"] for r in read_metrics(writer.path)] == [2]
