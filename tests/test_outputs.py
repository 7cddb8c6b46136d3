import pytest

from deepshrink.errors import OutputExistsError
from deepshrink.outputs import write_outputs


def test_writes_new_folder(tmp_path):
    out = tmp_path / "run"
    write_outputs(out, {"report.json": "{}", "model.dsz": b"\x00"})
    assert sorted(p.name for p in out.iterdir()) == ["model.dsz", "report.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.tmp")]


def test_refuses_folder_with_other_files_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="precious.txt"):
        write_outputs(out, {"report.json": "{}"})
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "keep me"


def test_refreshes_own_files_and_failure_leaves_old_ones(tmp_path):
    out = tmp_path / "run"
    write_outputs(out, {"report.json": "old"})

    def boom(path):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_outputs(out, {"report.json": "new", "model.dsz": boom})
    assert (out / "report.json").read_text() == "old"
    write_outputs(out, {"report.json": "new"})
    assert (out / "report.json").read_text() == "new"


def test_refuses_a_file_path(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputExistsError, match="not a folder"):
        write_outputs(f, {"report.json": "{}"})
