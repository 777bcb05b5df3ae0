"""What a run leaves behind: its run log (a JSON file in each output) and its ``ModelRunRecord``.

``run_log`` is the document a finished run wrote into ``provenance/provenafs-run-<id>.json`` of
each output: the command, working directory, host, times, exit code, model version, every file
read (version handle, path, ETag, size, bytes the mount served, opens), every file written
(sha256 and size; removed paths and folders marked) and the datasets listed. ``model_run``
builds the record Provena registers: inputs are the distinct versions the run read published
objects of (the run's own draft bytes are not an input, nor is a dataset it changed in place),
outputs the published versions, annotations the ``provenafs.*`` keys with the user's own.

Pure functions of the run's state: no I/O, no clock.
"""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from provenafs.api.prov_models import ModelRunRecord, TemplatedDataset, WorkflowTemplate
from provenafs.api.provenance import RUN_ID_ANNOTATION
from provenafs.core.sidecar_render import json_document
from provenafs.process.run_journal import RunState

__all__ = [
    "LOG_FORMAT",
    "command_text",
    "inputs_of",
    "log_path",
    "missing_annotations",
    "model_run",
    "run_log",
]

LOG_FORMAT = 1
_COMMAND_LIMIT = 4000
_NAME_LIMIT = 120


def log_path(run_id: str) -> str:
    """Where the run log lands inside each output dataset."""
    return f"provenance/provenafs-run-{run_id}.json"


def command_text(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")


def run_log(state: RunState, dataset: str) -> bytes:
    """The run log written into output *dataset* (the version the draft was made over)."""
    observed = state.log or {}
    document = {
        "provenafs_run_log": LOG_FORMAT,
        "run_id": state.run_id,
        "dataset": dataset,
        "command": list(state.argv),
        "cwd": state.cwd,
        "host": state.host,
        "started": _iso(state.started),
        "ended": _iso(state.ended),
        "exit_code": state.exit_code,
        "model_version": state.model_version,
        "outputs": sorted({*state.changed, *state.request.outputs}),
        "read": observed.get("read", []),
        "written": observed.get("written", []),
        "listed": observed.get("listed", []),
    }
    return json_document(document)


def inputs_of(state: RunState, outputs: Mapping[str, str]) -> list[str]:
    """Distinct versions whose published objects the run read, in first-read order; a dataset
    that is also an output version (changed in place) is not its own input."""
    produced = set(outputs.values())
    found: dict[str, None] = {}
    for read in (state.log or {}).get("read", []):
        handle = read.get("handle")
        if isinstance(handle, str) and read.get("etag") is not None and handle not in produced:
            found.setdefault(handle, None)
    return list(found)


def missing_annotations(template: WorkflowTemplate, given: Mapping[str, str]) -> list[str]:
    return [key for key in template.required_annotations if key not in given]


def annotations_of(state: RunState, outputs: Mapping[str, str]) -> dict[str, str]:
    reads = (state.log or {}).get("read", [])
    where = ", ".join(sorted(set(outputs.values()))) or "no output"
    annotations = {
        RUN_ID_ANNOTATION: state.run_id,
        "provenafs.command": command_text(state.argv)[:_COMMAND_LIMIT],
        "provenafs.exit_code": str(state.exit_code),
        "provenafs.host": state.host,
        "provenafs.cwd": state.cwd,
        "provenafs.files_read": str(len(reads)),
    }
    if state.request.publish:  # a recorded run writes no run log
        annotations["provenafs.log"] = f"{log_path(state.run_id)} in {where}"
    return {**annotations, **state.request.annotations}


def _default_name(state: RunState) -> str:
    text = command_text(state.argv)
    if len(text) > _NAME_LIMIT:
        text = text[: _NAME_LIMIT - 1] + "…"
    return f"provenafs run: {text}"


def _default_description(state: RunState, inputs: Sequence[str], outputs: Sequence[str]) -> str:
    observed = state.log or {}
    return (
        f"Ran `{command_text(state.argv)[:_COMMAND_LIMIT]}` in {state.cwd} on {state.host} "
        f"(exit code {state.exit_code}). Read {len(observed.get('read', []))} files of "
        f"{len(inputs)} dataset versions; wrote {len(observed.get('written', []))} files into "
        f"{len(outputs)} datasets. Recorded by provenafs; the run log is "
        f"{log_path(state.run_id)} in each output."
    )


def model_run(
    state: RunState,
    *,
    template: WorkflowTemplate,
    modeller: str,
    outputs: Mapping[str, str],
) -> ModelRunRecord:
    """The ``ModelRunRecord`` of a run whose outputs (base → published version) are known.

    Every input takes the template's first input dataset template, every output its first
    output template. ``ValueError`` when the template cannot hold them.
    """
    inputs = inputs_of(state, outputs)
    produced = list(dict.fromkeys(outputs.values()))
    if inputs and not template.input_template_ids:
        raise ValueError(f"the workflow template {template.id} takes no input datasets")
    if produced and not template.output_template_ids:
        raise ValueError(f"the workflow template {template.id} takes no output datasets")
    annotations = annotations_of(state, outputs)
    missing = missing_annotations(template, annotations)
    if missing:
        raise ValueError(
            f"the workflow template {template.id} requires the annotations {', '.join(missing)}"
            " (give them with --annotation KEY=VALUE)"
        )
    started = int(state.started)
    ended = max(started, int(state.ended if state.ended is not None else state.started))
    return ModelRunRecord(
        workflow_template_id=template.id,
        model_version=state.model_version,
        inputs=tuple(TemplatedDataset(template.input_template_ids[0], h) for h in inputs),
        outputs=tuple(TemplatedDataset(template.output_template_ids[0], h) for h in produced),
        annotations=annotations,
        display_name=state.request.name or _default_name(state),
        description=state.request.description or _default_description(state, inputs, produced),
        modeller_id=modeller,
        start_time=started,
        end_time=ended,
    )


def preview(record: ModelRunRecord | None, problems: Sequence[str]) -> dict[str, Any]:
    """What ``--dry-run`` prints: the record, or why it could not be built."""
    return {"record": None if record is None else record.to_json(), "problems": list(problems)}
