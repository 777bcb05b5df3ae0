"""What a run leaves behind: the run log and the ``ModelRunRecord`` built from its state."""

from __future__ import annotations

import dataclasses
import json

import pytest

from provenafs.api.prov_models import WorkflowTemplate
from provenafs.process.run_journal import RunRequest, RunState
from provenafs.process.run_record import inputs_of, log_path, model_run, run_log

TEMPLATE = WorkflowTemplate("10378.1/90", ("10378.1/91",), ("10378.1/92",), ())


def finished(reads: list[dict[str, object]], **request: object) -> RunState:
    state = RunState(
        run_id="r1",
        uid=1000,
        root_pid=1,
        root_start=1,
        argv=("python", "fit model.py"),
        cwd="/work",
        host="lab",
        started=1000.4,
        request=RunRequest(**request),  # type: ignore[arg-type]
    )
    state.apply(
        {
            "op": "finished",
            "exit_code": 0,
            "ended": 1060.9,
            "model_version": "abc+dirty",
            "log": {"read": reads, "written": [{"handle": "10378.1/3", "path": "out.csv"}]},
        }
    )
    state.changed = ["10378.1/3"]
    return state


READS: list[dict[str, object]] = [
    {"handle": "10378.1/1", "path": "a.csv", "etag": "e1"},
    {"handle": "10378.1/2", "path": "b.csv", "etag": "e2"},
    {"handle": "10378.1/1", "path": "c.csv", "etag": "e3"},
    {"handle": "10378.1/3", "path": "out.csv", "etag": None},  # the run's own draft bytes
]


def test_inputs_are_the_versions_whose_objects_were_read() -> None:
    state = finished(READS)
    assert inputs_of(state, {"10378.1/3": "10378.1/4"}) == ["10378.1/1", "10378.1/2"]
    # a dataset changed in place is an output, not its own input
    assert inputs_of(state, {"10378.1/2": "10378.1/2"}) == ["10378.1/1"]


def test_the_record_names_inputs_outputs_modeller_and_annotations() -> None:
    state = finished(READS, annotations={"team": "reef"})
    record = model_run(
        state, template=TEMPLATE, modeller="10378.1/7", outputs={"10378.1/3": "10378.1/4"}
    )
    wire = record.to_json()
    assert [d["dataset_id"] for d in wire["inputs"]] == ["10378.1/1", "10378.1/2"]
    assert {d["dataset_template_id"] for d in wire["inputs"]} == {"10378.1/91"}
    assert wire["outputs"] == [
        {"dataset_template_id": "10378.1/92", "dataset_id": "10378.1/4",
         "dataset_type": "DATA_STORE", "resources": None}
    ]  # fmt: skip
    assert wire["associations"] == {"modeller_id": "10378.1/7", "requesting_organisation_id": None}
    assert (wire["start_time"], wire["end_time"]) == (1000, 1060)
    assert wire["model_version"] == "abc+dirty"
    annotations = wire["annotations"]
    assert annotations["provenafs.run_id"] == "r1"
    assert annotations["provenafs.command"] == "python 'fit model.py'"
    assert annotations["provenafs.exit_code"] == "0" and annotations["provenafs.host"] == "lab"
    assert annotations["provenafs.log"] == f"{log_path('r1')} in 10378.1/4"
    assert annotations["team"] == "reef"
    assert wire["display_name"] == "provenafs run: python 'fit model.py'"
    assert "exit code 0" in wire["description"]


def test_names_and_templates_given_by_hand() -> None:
    state = finished(READS, name="Fit", description="Fitting the model")
    record = model_run(state, template=TEMPLATE, modeller="p", outputs={})
    assert (record.display_name, record.description) == ("Fit", "Fitting the model")
    assert record.outputs == ()
    no_inputs = dataclasses.replace(TEMPLATE, input_template_ids=())
    with pytest.raises(ValueError, match="takes no input datasets"):
        model_run(state, template=no_inputs, modeller="p", outputs={})
    strict = dataclasses.replace(TEMPLATE, required_annotations=("provenafs.host", "site"))
    with pytest.raises(ValueError, match="requires the annotations site"):
        model_run(state, template=strict, modeller="p", outputs={})


def test_a_recorded_run_names_no_run_log() -> None:
    state = finished(READS, publish=False)
    record = model_run(state, template=TEMPLATE, modeller="p", outputs={"x/1": "x/1"})
    assert "provenafs.log" not in record.annotations


def test_the_run_log_holds_the_command_reads_writes_and_times() -> None:
    state = finished(READS)
    document = json.loads(run_log(state, "10378.1/3"))
    assert document["run_id"] == "r1" and document["dataset"] == "10378.1/3"
    assert document["command"] == ["python", "fit model.py"]
    assert document["started"].startswith("1970-01-01T00:16:40.4")
    assert document["exit_code"] == 0 and document["model_version"] == "abc+dirty"
    assert document["read"] == READS and document["outputs"] == ["10378.1/3"]
    assert run_log(state, "10378.1/3") == run_log(state, "10378.1/3")  # rewritten alike
