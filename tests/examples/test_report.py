import json
from pathlib import Path

from examples.bilevel import report


def test_json_and_plot(tmp_path):
    path = report.write_json(str(tmp_path / "a" / "r.json"), {"x": [1, 2]})
    assert json.loads(Path(path).read_text()) == {"x": [1, 2]}
    png = report.plot_curves(str(tmp_path / "p.png"), {"a": ([1, 2], [3, 1])}, xlabel="x", ylabel="y", title="t", log_y=True)
    assert Path(png).read_bytes()[:4] == b"\x89PNG"
