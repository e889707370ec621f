import json

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
    assert all(json.loads(line) for line in open(path))
    written = plot_metrics(path, str(tmp_path))
    assert [p.rsplit("/", 1)[-1] for p in written] == ["loss.png", "accuracy.png"]
    MetricsWriter(path)  # a fresh run starts a fresh file
    assert not (tmp_path / "metrics.jsonl").exists()
