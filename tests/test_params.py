"""ex3lib.params: a chapter's notebook parameters checked with the library's messages, naming the parameter."""

import ast
import re
import types
from pathlib import Path

import nbformat
import pytest

import ex3lib
from ex3lib import params

ROOT = Path(__file__).resolve().parents[1]


def declared(chapter):
    """The parameters the chapter's ``parameters`` cell declares: name -> default value."""
    import papermill

    found = papermill.inspect_notebook(str(ROOT / "book" / f"{chapter}.ipynb"))
    return {name: ast.literal_eval(spec["default"]) for name, spec in found.items()}


@pytest.mark.parametrize("chapter", sorted(params.CHAPTERS))
def test_every_chapter_parameter_has_a_rule_and_its_default_passes(chapter):
    defaults = declared(chapter)
    assert list(params.CHAPTERS[chapter]) == list(defaults), "the rules follow the parameters cell"
    assert ex3lib.check_parameters(defaults, chapter) == defaults


def test_every_chapter_has_rules():
    chapters = sorted(p.stem for p in (ROOT / "book").glob("*.ipynb"))
    assert chapters == sorted(params.CHAPTERS)


@pytest.mark.parametrize("chapter, name, value, exc, message", [
    # The examples: the error named `seeds`, not the parameter the reader passed.
    ("sgd", "batch_size", "ten", TypeError, "batch_size must be an integer, got 'ten' (str)"),
    ("sgd", "n_seeds", 0, ValueError, "n_seeds must be an integer >= 1, got 0"),
    ("sgd", "learning_rate", 0.0, ValueError, "learning_rate must be a finite number in (0, inf), got 0.0"),
    ("sgd", "learning_rate", "fast", TypeError, "learning_rate must be a real number, got 'fast' (str)"),
    ("sgd", "epochs", 1.5, TypeError, "epochs must be an integer, got 1.5 (float)"),
    ("sgd", "train_size", 0, ValueError, "train_size must be an integer >= 1, got 0"),
    ("sgd", "long_epochs", -1, ValueError, "long_epochs must be an integer >= 0, got -1"),
    ("sgd", "order", "shufle", ValueError, "order must be one of 'sequential', 'shuffle'; got 'shufle' "
                                           "(did you mean 'shuffle'?)"),
    ("sgd", "batch_size", 60001, ValueError, "batch_size must be an integer from 1 to 60000, got 60001"),
    ("sgd", "learning_rates", "[0.1, 0.01]", TypeError, "learning_rates must be a list, got the text "
                                                         "'[0.1, 0.01]': papermill's -p passes text"),
    ("sgd", "learning_rates", [0.1, -1], ValueError, "learning_rates[1] must be a finite number in (0, inf)"),
    ("sgd", "batch_sizes", [10, "m"], TypeError, "batch_sizes[1] must be an integer, got 'm' (str)"),
    ("momentum", "momentum", 1.0, ValueError, "momentum must be a finite number in [0, 1), got 1.0"),
    ("momentum", "learning_rates", [], ValueError, "learning_rates must list at least 1 value(s), got []"),
    ("decay", "lr_finals", [], ValueError, "lr_finals must list at least 1 value(s), got []"),
    ("gradients", "h", 0.0, ValueError, "h must be a finite number in (0, inf), got 0.0"),
    ("gradients", "sample_index", 60000, ValueError, "sample_index must be an integer from 0 to 59999"),
    ("intro", "n_samples_shown", 0, ValueError, "n_samples_shown must be an integer from 1 to 60000, got 0"),
    ("adaptive", "n_seeds_grid", True, TypeError, "n_seeds_grid must be an integer, got True (bool)"),
])
def test_a_bad_parameter_is_named(chapter, name, value, exc, message):
    values = {**declared(chapter), name: value}
    with pytest.raises(exc) as info:
        ex3lib.check_parameters(values, chapter)
    assert str(info.value).startswith(message), str(info.value)


def test_values_come_back_canonical_and_the_namespace_is_untouched():
    values = {"learning_rate": 1, "learning_rates": (1, 0.5)}
    spec = {"learning_rate": params.LEARNING_RATE, "learning_rates": params.list_of(params.LEARNING_RATE)}
    checked = ex3lib.check_parameters(values, spec)
    assert checked == {"learning_rate": 1.0, "learning_rates": [1.0, 0.5]}
    assert type(checked["learning_rate"]) is float and values["learning_rate"] == 1
    assert ex3lib.check_parameters(types.SimpleNamespace(**values), spec) == checked


def test_a_missing_parameter_and_bad_specs_are_refused():
    with pytest.raises(ValueError, match="the parameter epochs is not defined"):
        ex3lib.check_parameters({}, {"epochs": params.EPOCHS})
    with pytest.raises(ValueError, match=r"spec must be one of .*; got 'sdg'"):
        ex3lib.check_parameters({}, "sdg")
    with pytest.raises(ValueError, match=r"did you mean 'sgd'\?"):
        ex3lib.check_parameters({}, "sdg")
    with pytest.raises(TypeError, match="spec must be a chapter's name or a mapping"):
        ex3lib.check_parameters({}, {"epochs": int})
    with pytest.raises(TypeError, match="item must be a Rule"):
        params.list_of(int)


def test_flags_and_choices():
    spec = {"nesterov": params.flag(), "optimiser": params.choice(*ex3lib.OPTIMISERS)}
    assert ex3lib.check_parameters({"nesterov": False, "optimiser": "adam"}, spec) == {
        "nesterov": False, "optimiser": "adam"}
    with pytest.raises(TypeError, match="nesterov must be True or False, got 'yes'"):
        ex3lib.check_parameters({"nesterov": "yes", "optimiser": "adam"}, spec)
    with pytest.raises(ValueError, match=r"optimiser must be one of .*; got 'sdg' \(did you mean 'sgd'\?\)"):
        ex3lib.check_parameters({"nesterov": False, "optimiser": "sdg"}, spec)


def test_a_papermill_run_names_the_notebook_parameter(tmp_path):
    # What a chapter's first cell does, end to end: papermill -p n_seeds 0 fails naming n_seeds.
    import papermill
    from papermill.exceptions import PapermillExecutionError

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell("n_seeds: int = 3  # seeds per setting\nbatch_size: int = 10  # m")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(
        "import ex3lib\n"
        "ex3lib.check_parameters(globals(), {'n_seeds': ex3lib.params.N_SEEDS,\n"
        "                                    'batch_size': ex3lib.params.BATCH_SIZE})\n"
        "print('checked')")]
    nbformat.write(nb, tmp_path / "chapter.ipynb")
    for parameters, ename, message in (({"n_seeds": 0}, "ValueError", "n_seeds must be an integer >= 1, got 0"),
                                       ({"batch_size": "ten"}, "TypeError",
                                        "batch_size must be an integer, got 'ten' (str)")):
        with pytest.raises(PapermillExecutionError) as info:
            papermill.execute_notebook(str(tmp_path / "chapter.ipynb"), str(tmp_path / "out.ipynb"),
                                       parameters=parameters, progress_bar=False, cwd=str(tmp_path))
        assert info.value.ename == ename and info.value.evalue == message


@pytest.mark.parametrize("chapter", sorted(params.CHAPTERS))
def test_every_chapter_checks_its_parameters_before_it_runs_anything(chapter):
    nb = nbformat.read(ROOT / "book" / f"{chapter}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", []))
    after = code[first + 1].source
    call = f'ex3lib.chapter_parameters(globals(), "{chapter}")'
    assert call in after, f"the cell after {chapter}'s parameters must call {call}"
    before = after[:after.index(call)]
    assert "load_mnist" not in before and "run_many" not in before and "train(" not in before, \
        "nothing may run before the parameters are checked"


def test_environment_parameters_replace_the_chapters_own(monkeypatch, capsys):
    monkeypatch.delenv(params.OVERRIDES_ENV_VAR, raising=False)
    assert params.environment_parameters() == {}
    namespace = {**declared("protocol")}
    assert ex3lib.chapter_parameters(namespace, "protocol") == declared("protocol")
    assert capsys.readouterr().out == "", "nothing is said when nothing is replaced"

    monkeypatch.setenv(params.OVERRIDES_ENV_VAR, '{"train_size": 10000, "n_seeds": 3}')
    checked = ex3lib.chapter_parameters(namespace, "protocol")
    assert checked["train_size"] == namespace["train_size"] == 10000
    assert checked["n_seeds"] == namespace["n_seeds"] == 3
    assert checked["epochs"] == 10, "the others stay as the parameters cell set them"
    out = capsys.readouterr().out
    assert "EX3_BOOK_PARAMETERS" in out and "train_size = 10000 (its parameters cell: 60000)" in out
    # A chapter takes only the parameters it has: the intro has neither.
    intro = {**declared("intro")}
    assert ex3lib.chapter_parameters(intro, "intro") == declared("intro") and "train_size" not in intro


@pytest.mark.parametrize("text, exc, message", [
    ("train_size=10000", ValueError, "EX3_BOOK_PARAMETERS must be a JSON object of parameter values"),
    ("[10000]", ValueError, "EX3_BOOK_PARAMETERS must be a JSON object of parameter values"),
    ('{"train_sise": 10000}', ValueError, "EX3_BOOK_PARAMETERS names train_sise, which no chapter has "
                                          "(did you mean 'train_size'?)"),
    ('{"train_size": 0}', ValueError, "EX3_BOOK_PARAMETERS: train_size must be an integer >= 1, got 0"),
    ('{"train_size": "ten"}', TypeError, "EX3_BOOK_PARAMETERS: train_size must be an integer, got 'ten' (str)"),
])
def test_bad_environment_parameters_are_refused_naming_the_variable(monkeypatch, text, exc, message):
    monkeypatch.setenv(params.OVERRIDES_ENV_VAR, text)
    namespace = {**declared("sgd")}
    with pytest.raises(exc, match=re.escape(message)):
        ex3lib.chapter_parameters(namespace, "sgd")
    assert namespace == declared("sgd"), "nothing is replaced when the variable is refused"
