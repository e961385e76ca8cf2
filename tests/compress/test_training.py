import json

import pytest

from tinyship.compress import DistillConfig
from tinyship.compress.config import STAGE_FILE
from tinyship.compress.training import checkpoints_of, prepare_checkpoints
from tinyship.runtime.errors import TinyshipError


def test_an_interrupted_run_resumes_across_a_setting_added_since_at_its_default(tmp_path):
    out = tmp_path / "student"
    checkpoints = prepare_checkpoints(out, DistillConfig(output_dir=str(out), min_steps=0))
    (checkpoints / "checkpoint-100").mkdir()
    recorded = json.loads((checkpoints / STAGE_FILE).read_text())
    del recorded["config"]["teacher_precision"]  # as a tinyship without the setting wrote it
    (checkpoints / STAGE_FILE).write_text(json.dumps(recorded))

    assert prepare_checkpoints(out, DistillConfig(output_dir=str(out), min_steps=0)) == checkpoints_of(out)
    assert (checkpoints / "checkpoint-100").is_dir()  # kept for the resume
    (checkpoints / STAGE_FILE).write_text(json.dumps(recorded))
    with pytest.raises(TinyshipError, match="holds an interrupted run with other settings"):
        prepare_checkpoints(out, DistillConfig(output_dir=str(out), min_steps=0, teacher_precision="fp32"))
    with pytest.raises(TinyshipError, match="holds an interrupted run with other settings"):
        prepare_checkpoints(out, DistillConfig(output_dir=str(out), min_steps=0, batch_size=8))
