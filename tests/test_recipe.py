import pytest

from deepshrink.errors import RecipeError
from deepshrink.recipe import Recipe, as_recipe, step_types


def test_round_trip_yaml_and_json():
    r = Recipe.from_list([{"type": "finetune", "epochs": 2, "lr": 0.01}])
    assert Recipe.from_yaml(r.to_yaml()) == r
    assert Recipe.from_json(r.to_json()) == r
    assert r.to_list() == [{"type": "finetune", "epochs": 2.0, "lr": 0.01}]


def test_unknown_step_type_names_it():
    with pytest.raises(RecipeError, match="unknown step type 'prnue'"):
        Recipe.from_list([{"type": "prnue"}])


def test_unknown_field_names_it():
    with pytest.raises(RecipeError, match="no field 'epoch'"):
        Recipe.from_list([{"type": "finetune", "epoch": 3}])


def test_wrong_field_type_names_it():
    with pytest.raises(RecipeError, match="field 'lr'"):
        Recipe.from_list([{"type": "finetune", "lr": "fast"}])


def test_bad_value_is_a_recipe_error():
    with pytest.raises(RecipeError, match="epochs must be > 0"):
        Recipe.from_list([{"type": "finetune", "epochs": 0}])


def test_missing_type_and_bad_shapes():
    with pytest.raises(RecipeError, match="no 'type'"):
        Recipe.from_list([{"epochs": 1}])
    with pytest.raises(RecipeError, match="list of steps"):
        Recipe.from_list("finetune")
    with pytest.raises(RecipeError, match="not valid YAML"):
        Recipe.from_yaml("steps: [")


def test_load_from_files(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("steps:\n  - type: finetune\n    epochs: 1\n")
    assert Recipe.load(p).steps[0].epochs == 1.0
    with pytest.raises(RecipeError, match="does not exist"):
        Recipe.load(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match="unknown recipe"):
        as_recipe("no_such_bundled_recipe")


def test_every_registered_step_round_trips_with_defaults():
    import dataclasses

    for name, cls in step_types().items():
        required = [f for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        if required:
            continue
        r = Recipe.from_list([{"type": name}])
        assert Recipe.from_json(r.to_json()) == r
