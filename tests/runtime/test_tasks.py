import json
from importlib.resources import files

from tinyship.compress.tasks import TASKS as TRAINED
from tinyship.runtime.tasks import BUNDLE_TASKS, TASKS


def test_every_declared_task_is_trained_exported_and_served():
    assert TRAINED.keys() == TASKS.keys()
    assert all(TRAINED[name].metric == spec.metric and TRAINED[name].head == spec.head for name, spec in TASKS.items())
    assert len(BUNDLE_TASKS) == len(TASKS)  # one bundle task each
    schema = json.loads(files("tinyship.runtime").joinpath("manifest.schema.json").read_text())
    assert schema["properties"]["task"]["enum"] == list(BUNDLE_TASKS)


def test_windows_overlap_by_a_quarter_for_question_answering_only():
    assert TASKS["question-answering"].truncation(128) == {"strategy": "only_second", "stride": 32}
    assert {TASKS[n].truncation(128)["strategy"] for n in TASKS if n != "question-answering"} == {"longest_first"}
