from PIL import Image

from sdrag.app import demo


def test_demo_runs_the_chain_offline_and_saves_a_panel(tmp_path, capsys):
    code = demo.main(["--library", str(tmp_path / "lib"), "--out", str(tmp_path / "out"), "--size", "64",
                      "--steps", "2"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out
    # Progress on stderr: each stage named, and a bar over the generation's steps.
    for stage in ("loading models (preset tiny)", "ingesting styles from", "generating 64x64, 2 steps"):
        assert stage in captured.err, captured.err
    assert "2/2" in captured.err
    assert "retrieved style:" in out and "score" in out and "timings:" in out and "generate" in out
    panel = tmp_path / "out" / "demo-tiny_panel.png"
    assert panel.is_file() and Image.open(panel).size[0] > 400
    # A second run re-ingests nothing.
    assert demo.main(["--library", str(tmp_path / "lib"), "--out", str(tmp_path / "out"), "--size", "64",
                      "--steps", "1"]) == 0
    assert "0 added, 0 updated" in capsys.readouterr().out
