import json
import textwrap

import pytest
import torch

from deepshrink.cli import main

TASK = textwrap.dedent("""
    import torch
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    example_inputs = torch.randn(1, 8)
    _x = torch.randn(64, 8)
    _y = (_x[:, 0] > 0).long()
    train_data = [(_x[i:i + 16], _y[i:i + 16]) for i in range(0, 64, 16)]
    def evaluate(m):
        with torch.no_grad():
            return float((m(_x).argmax(1) == _y).float().mean())
""")


@pytest.fixture
def task_file(tmp_path):
    p = tmp_path / "task.py"
    p.write_text(TASK)
    return p


def test_compress_writes_all_outputs(tmp_path, task_file, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - type: finetune\n    epochs: 1\n    lr: 0.01\n")
    out = tmp_path / "out"
    assert main(["compress", "--task", str(task_file), "--recipe", str(recipe), "--out", str(out), "--latency-batch", "4"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["baseline.pt", "model.dsz", "recipe.yaml", "report.html", "report.json", "report.md"]
    rep = json.loads((out / "report.json").read_text())
    assert rep["baseline"]["accuracy"] is not None and rep["final"]["name"] == "1. finetune"
    state = torch.load(out / "baseline.pt", weights_only=True)
    assert "0.weight" in state
    printed = capsys.readouterr().out
    assert "baseline" in printed and "compression ratio" in printed


def test_unknown_step_is_refused_and_nothing_written(tmp_path, task_file, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - type: prnue\n")
    out = tmp_path / "out"
    assert main(["compress", "--task", str(task_file), "--recipe", str(recipe), "--out", str(out)]) == 2
    assert "RecipeError" in capsys.readouterr().err and not out.exists()


def test_output_folder_with_other_files_is_refused(tmp_path, task_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["compress", "--task", str(task_file), "--recipe", "deep_compression", "--out", str(out)]) == 2
    assert "OutputExistsError" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_bad_task_file_is_refused(tmp_path, capsys):
    p = tmp_path / "t.py"
    p.write_text("x = 1\n")
    assert main(["profile", "--task", str(p)]) == 2
    assert "TaskError" in capsys.readouterr().err


def test_profile_prints_table_and_json(task_file, capsys):
    assert main(["profile", "--task", str(task_file)]) == 0
    assert "TOTAL" in capsys.readouterr().out
    assert main(["profile", "--task", str(task_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 8 * 16 + 16 + 16 * 2 + 2
