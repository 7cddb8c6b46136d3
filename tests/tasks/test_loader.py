import textwrap

import pytest

from deepshrink.errors import TaskError
from deepshrink.tasks import Task, load_task


def test_load_from_file_with_names(tmp_path):
    p = tmp_path / "mytask.py"
    p.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        model = nn.Linear(4, 2)
        example_inputs = torch.zeros(1, 4)
        def evaluate(m):
            return 0.5
    """))
    t = load_task(str(p))
    assert isinstance(t, Task) and t.name == "mytask"
    assert isinstance(t.example_inputs, tuple) and t.evaluate(t.model) == 0.5


def test_load_from_file_with_get_task(tmp_path):
    p = tmp_path / "t2.py"
    p.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from deepshrink.tasks import Task
        def get_task():
            return Task(name="x", model=nn.Linear(4, 2), example_inputs=(torch.zeros(1, 4),))
    """))
    assert load_task(str(p)).name == "x"
    assert load_task(f"{p}:get_task").name == "x"


def test_module_function_spec():
    t = load_task("tests.tasks.task_fixture:make")
    assert t.name == "fixture"


def test_task_file_missing_names(tmp_path):
    p = tmp_path / "bad.py"
    p.write_text("x = 1\n")
    with pytest.raises(TaskError, match="missing: model"):
        load_task(str(p))


def test_task_file_that_fails_to_import(tmp_path):
    p = tmp_path / "boom.py"
    p.write_text("raise RuntimeError('nope')\n")
    with pytest.raises(TaskError, match="failed to import"):
        load_task(str(p))


def test_unknown_specs():
    with pytest.raises(TaskError, match="unknown task"):
        load_task("not-a-task")
    with pytest.raises(TaskError, match="does not exist"):
        load_task("/nonexistent/file.py")
    with pytest.raises(TaskError, match="no function"):
        load_task("tests.tasks.task_fixture:nothing")
