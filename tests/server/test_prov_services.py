"""Provena's registry, prov, job, search and auth APIs as the local store answers them.

Over real HTTP against a private seeded ``provenafs serve`` (these tests register runs, link
users and change access). Each test asserts exact status codes, ``detail`` texts and key sets of
the real services, and the attacker tests check that a refused request changed no table.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStore, start_local_store
from tests.server.support import issue_token

pytestmark = pytest.mark.s3

UNAUTHENTICATED = {"detail": "Could not validate credentials"}
NOT_AUTHENTICATED = {"detail": "Not authenticated"}  # no header, or not Bearer
WRONG_ROLE = {
    "detail": "You are not authorised to access this resource as you don't have the correct role."
}
LINK_REQUIRED = (
    "In order to perform this operation you must link your User account to a Person in the"
    " registry."
)
ENTITY_ROLES = ["metadata-read", "metadata-write", "admin"]
ITEM_TAIL = [
    "history",
    "id",
    "owner_username",
    "created_timestamp",
    "updated_timestamp",
    "item_category",
    "item_subtype",
    "record_type",
    "workflow_links",
    "versioning_info",
]
JOB_KEYS = [
    "session_id",
    "created_timestamp",
    "username",
    "batch_id",
    "payload",
    "job_type",
    "job_sub_type",
    "gsi_status",
    "status",
    "info",
    "result",
]
FETCH_KEYS = ["status", "item", "roles", "locked", "item_is_seed"]


class Api:
    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.http = httpx.Client(base_url=store.base_url, timeout=60)
        self.tokens: dict[str, str] = {}
        self.manifest = store.manifest()

    def headers(self, user: str | None) -> dict[str, str]:
        if user is None:
            return {}
        if user not in self.tokens:
            self.tokens[user] = issue_token(self.store, user)
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def get(self, user: str | None, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, headers=self.headers(user), params=params)

    def post(self, user: str | None, path: str, body: Any = None, **params: Any) -> httpx.Response:
        return self.http.post(path, headers=self.headers(user), json=body, params=params)

    def put(self, user: str | None, path: str, body: Any = None, **params: Any) -> httpx.Response:
        return self.http.put(path, headers=self.headers(user), json=body, params=params)

    def handle(self, seed_name: str) -> str:
        handle: str = self.manifest["datasets"][seed_name]["handle"]
        return handle

    def person(self, user: str) -> str:
        person: str = self.manifest["persons"][user]
        return person

    def job(self, user: str, session_id: str) -> dict[str, Any]:
        """Poll the job API until the job has finished (the runner completes jobs promptly)."""
        deadline = time.monotonic() + 60
        while True:
            response = self.get(user, "/jobs/user/fetch", session_id=session_id)
            assert response.status_code == 200, response.text
            job: dict[str, Any] = response.json()["job"]
            if job["status"] in ("SUCCEEDED", "FAILED") or time.monotonic() > deadline:
                return job
            time.sleep(0.05)

    def mint(self, user: str, name: str) -> str:
        document = self.get(
            "admin", "/registry/items/fetch-dataset", handle_id=self.handle("history")
        )
        collection_format = document.json()["item"]["collection_format"]
        collection_format["dataset_info"]["name"] = name
        response = self.post(user, "/register/mint-dataset", collection_format)
        assert response.status_code == 200, response.text
        assert response.json()["status"]["success"], response.text
        handle: str = response.json()["handle"]
        return handle

    def record(self, inputs: list[str], outputs: list[str], **changes: Any) -> dict[str, Any]:
        templates = self.manifest["dataset_templates"]
        return {
            "workflow_template_id": self.manifest["workflow_template"],
            "inputs": [
                {
                    "dataset_template_id": templates["input"],
                    "dataset_id": d,
                    "dataset_type": "DATA_STORE",
                }
                for d in inputs
            ],
            "outputs": [
                {
                    "dataset_template_id": templates["output"],
                    "dataset_id": d,
                    "dataset_type": "DATA_STORE",
                }
                for d in outputs
            ],
            "annotations": {"provenafs.command": "python analyse.py"},
            "display_name": "Reef analysis",
            "description": "Hourly means per logger.",
            "associations": {"modeller_id": self.person("alice")},
            "start_time": 1_700_000_000,
            "end_time": 1_700_000_060,
            **changes,
        }

    def register(self, user: str, record: dict[str, Any]) -> dict[str, Any]:
        response = self.post(user, "/model_run/register", record)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["status"] == {
            "success": True,
            "details": "Job dispatched, monitor session ID using the job API to see progress.",
        }
        return self.job(user, body["session_id"])


def table_digest(store: LocalStore) -> dict[str, str]:
    """A digest of every table the services write, to prove a refusal changed nothing."""
    db = sqlite3.connect(f"file:{store.data_dir / 'registry.sqlite'}?mode=ro", uri=True)
    try:
        digests = {}
        for table in (
            "items",
            "access",
            "locks",
            "lock_events",
            "user_links",
            "jobs",
            "prov_links",
            "reviewers",
        ):
            rows = db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()  # noqa: S608
            digests[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
        return digests
    finally:
        db.close()


def settled(api: Api) -> dict[str, str]:
    """The table digest once no job is pending (jobs from earlier tests may still run)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = api.post("admin", "/jobs/user/list", {"limit": 1000}).json()["jobs"]
        others = [api.post(u, "/jobs/user/list", {"limit": 1000}).json()["jobs"] for u in USERS]
        jobs = listed + [job for page in others for job in page]
        if all(job["status"] in ("SUCCEEDED", "FAILED") for job in jobs):
            return table_digest(api.store)
        time.sleep(0.05)
    raise AssertionError("jobs did not settle")


USERS = ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    private = start_local_store(tmp_path_factory.mktemp("prov") / "data")
    try:
        for name, roles in (("dave", "r,w"), ("erin", "r,w"), ("reader", "r")):
            result = private.serve_cli(
                "user", "add", name, "--email", f"{name}@example.org", "--roles", roles
            )
            assert result.returncode == 0, result.stderr
        yield private
    finally:
        private.stop()


@pytest.fixture(scope="module")
def api(store: LocalStore) -> Iterator[Api]:
    client = Api(store)
    yield client
    client.http.close()


# --------------------------------------------------------------------------- identity


def test_seed_links_a_person_per_user(api: Api) -> None:
    for user in ("alice", "bob", "carol", "admin"):
        response = api.get(user, "/link/user/lookup")
        assert response.json() == {"person_id": api.person(user), "success": True}
        person = api.get("bob", "/registry/agent/person/fetch", id=api.person(user)).json()
        assert list(person) == FETCH_KEYS
        assert person["item"]["owner_username"] == user
        assert person["item"]["item_subtype"] == "PERSON"
    assert api.get("alice", "/link/user/lookup", username="bob").json()["person_id"] == (
        api.person("bob")
    )
    assert api.get("dave", "/link/user/lookup").json() == {"person_id": None, "success": False}
    assert api.get("alice", "/release/sys-reviewers/list").json() == [api.person("admin")]


def test_assign_link_rules(api: Api, store: LocalStore) -> None:
    person = {
        "display_name": "Dave Diver",
        "email": "dave@example.org",
        "first_name": "Dave",
        "last_name": "Diver",
        "ethics_approved": True,
    }
    created = api.post("dave", "/registry/agent/person/create", person).json()
    assert created["status"]["success"], created
    dave_person = created["created_item"]["id"]
    assert created["register_create_activity_session_id"] is None  # people have no Create job

    before = settled(api)
    not_owned = api.post("erin", "/link/user/assign", {"person_id": dave_person})
    assert not_owned.status_code == 401
    assert not_owned.json()["detail"] == (
        "Registry did not grant access to the auth configuration for this person. Details: You"
        f" are not authorised to view the access configuration for item id='{dave_person}'.."
    )
    unknown = api.post("erin", "/link/user/assign", {"person_id": "10378.1/999"})
    assert unknown.status_code == 500
    assert (
        "Status code: 400. Details: Item (id='10378.1/999') was not present"
        in (unknown.json()["detail"])
    )
    dataset = api.post("erin", "/link/user/assign", {"person_id": api.handle("history")})
    assert dataset.status_code in (401, 500)  # erin has no admin role on carol's dataset
    assert api.post("erin", "/link/user/assign", {"person_id": ""}).status_code == 422
    assert table_digest(store) == before

    assert api.post("dave", "/link/user/assign", {"person_id": dave_person}).json() == {}
    assert api.get("dave", "/link/user/lookup").json() == {
        "person_id": dave_person,
        "success": True,
    }
    again = api.post("dave", "/link/user/assign", {"person_id": dave_person})
    assert again.status_code == 400
    assert again.json()["detail"] == (
        f"The username dave already has a person ID assigned, ID {dave_person}. You cannot"
        " deassign a Person ID without contacting an admin."
    )
    groups = api.get("alice", "/groups/user/list_groups").json()
    assert [group["id"] for group in groups["groups"]] == ["reef-team"]
    mine = api.get("bob", "/groups/user/list_user_membership").json()
    assert mine["groups"] == []


# --------------------------------------------------------------------------- registry items


def test_entity_fetch_shapes_and_create_activity(api: Api) -> None:
    workflow = api.get(
        "bob", "/registry/entity/model_run_workflow/fetch", id=api.manifest["workflow_template"]
    ).json()
    assert workflow["status"] == {
        "success": True,
        "details": "Successfully retrieved complete item and parsed into current data model.",
    }
    item = workflow["item"]
    assert list(item) == [
        "display_name",
        "user_metadata",
        "software_id",
        "input_templates",
        "output_templates",
        "annotations",
        *ITEM_TAIL,
    ]
    assert item["input_templates"] == [
        {"template_id": api.manifest["dataset_templates"]["input"], "optional": True}
    ]
    assert item["versioning_info"] == {
        "previous_version": None,
        "version": 1,
        "reason": None,
        "next_version": None,
    }
    assert (workflow["roles"], workflow["locked"], workflow["item_is_seed"]) == (
        ["metadata-read"],
        False,
        False,
    )
    owner_view = api.get("admin", "/registry/entity/model/fetch", id=api.manifest["model"]).json()
    assert owner_view["roles"] == ENTITY_ROLES
    assert list(owner_view["item"])[:6] == [
        "display_name",
        "user_metadata",
        "name",
        "description",
        "documentation_url",
        "source_url",
    ]
    session = owner_view["item"]["workflow_links"]["create_activity_workflow_id"]
    job = api.job("admin", session)
    assert (job["job_type"], job["job_sub_type"], job["status"]) == (
        "REGISTRY",
        "REGISTER_CREATE_ACTIVITY",
        "SUCCEEDED",
    )
    activity = api.get(
        "admin", "/registry/activity/create/fetch", id=job["result"]["creation_activity_id"]
    ).json()
    assert activity["item"]["created_item_id"] == api.manifest["model"]
    assert activity["item"]["display_name"] == f"Created item {api.manifest['model']}"
    assert api.job("admin", job["result"]["lodge_session_id"])["status"] == "SUCCEEDED"


def test_fetch_quirks(api: Api) -> None:
    missing = api.get("bob", "/registry/entity/model/fetch", id="10378.1/1").json()
    assert missing == {
        "status": {
            "success": False,
            "details": "Could not find the given key (10378.1/1) in the registry. Details"
            " \"Failed to find item. Is the ID ('10378.1/1') correct and in the database?\".",
        },
        "item": None,
        "roles": None,
        "locked": None,
        "item_is_seed": None,
    }
    wrong_type = api.get("bob", "/registry/entity/model/fetch", id=api.person("bob")).json()
    assert wrong_type["status"]["success"] is False
    assert wrong_type["status"]["details"].startswith(
        "The record was found but could not parsed as an appropriate type"
    )
    general = api.get("bob", "/registry/general/fetch", id=api.manifest["model"]).json()
    assert general["status"]["details"] == "Successfully retrieved item from the registry."
    assert "user_metadata" not in general["item"]  # raw stored items keep no nulls
    assert general["item"]["item_subtype"] == "MODEL"
    seed = api.get("admin", "/registry/entity/dataset/fetch", id=api.manifest["incomplete_dataset"])
    assert seed.json()["status"]["details"] == (
        "A valid seed item was found, but seed_allowed was set to false."
    )
    private = api.get("alice", "/registry/entity/dataset/fetch", id=api.handle("private-bob"))
    assert (private.status_code, private.json()) == (
        401,
        {"detail": "You are not authorised to fetch this item."},
    )
    not_served = api.put("alice", "/registry/entity/model/update", {})
    assert (not_served.status_code, not_served.json()) == (
        501,
        {"detail": "The local data store does not serve PUT /registry/entity/model/update."},
    )
    assert api.get("alice", "/registry/entity/person/fetch", id="x").status_code == 404
    assert api.get(None, "/registry/entity/model/fetch", id="x").json() == NOT_AUTHENTICATED


def test_create_rules(api: Api) -> None:
    model = {
        "display_name": "Reef model",
        "name": "Reef model",
        "description": "Predicts reef temperature.",
        "documentation_url": "https://example.org/docs",
        "source_url": "https://example.org/src",
    }
    created = api.post("alice", "/registry/entity/model/create", model).json()
    assert list(created) == ["status", "created_item", "register_create_activity_session_id"]
    item = created["created_item"]
    assert item["owner_username"] == "alice"
    assert item["history"][0]["reason"] == "Initial record creation"
    assert (
        item["workflow_links"]["create_activity_workflow_id"]
        == (created["register_create_activity_session_id"])
    )
    assert api.job("alice", created["register_create_activity_session_id"])["status"] == "SUCCEEDED"
    listed = api.post("bob", "/registry/entity/model/list", {}).json()
    assert item["id"] in [i["id"] for i in listed["items"]]
    assert listed["complete_item_count"] == len(listed["items"])

    bad_workflow = api.post(
        "alice",
        "/registry/entity/model_run_workflow/create",
        {"display_name": "w", "software_id": "10378.1/1", "input_templates": []},
    ).json()
    assert bad_workflow == {
        "status": {
            "success": False,
            "details": "Validation Error: Could not find Software ID with ID 10378.1/1 in"
            " registry. Please ensure it exists.",
        },
        "created_item": None,
        "register_create_activity_session_id": None,
    }
    no_consent = api.post(
        "alice",
        "/registry/agent/person/create",
        {"display_name": "X", "email": "x@example.org", "first_name": "X", "last_name": "Y"},
    ).json()
    assert no_consent["status"]["success"] is False
    unlinked = api.post("erin", "/registry/entity/model/create", model)
    assert (unlinked.status_code, unlinked.json()) == (400, {"detail": LINK_REQUIRED})
    assert api.post("reader", "/registry/entity/model/create", model).json() == WRONG_ROLE
    bad_url = api.post("alice", "/registry/entity/model/create", {**model, "source_url": "x"})
    assert bad_url.status_code == 422
    assert api.put("alice", "/registry/entity/model/update", model).status_code == 501
    assert api.post("alice", "/registry/activity/model_run/create", {}).status_code == 404


def test_organisations_are_created_fetched_and_listed_and_templates_and_people_listed(
    api: Api,
) -> None:
    made = api.post(
        "alice",
        "/registry/agent/organisation/create",
        {"display_name": "Reef Lab", "name": "Reef Lab", "ror": "https://ror.org/00x0x0x00"},
    ).json()
    assert made["status"]["success"] is True, made
    handle = made["created_item"]["id"]
    fetched = api.get("bob", "/registry/agent/organisation/fetch", id=handle).json()
    assert (fetched["item"]["name"], fetched["item"]["item_subtype"]) == (
        "Reef Lab",
        "ORGANISATION",
    )
    listed = api.post("bob", "/registry/agent/organisation/list", {}).json()
    assert handle in [i["id"] for i in listed["items"]]
    bad = api.post(
        "alice",
        "/registry/agent/organisation/create",
        {"display_name": "X", "name": "X", "ror": "x"},
    )
    assert bad.status_code == 422
    for path, seeded in (
        ("/registry/entity/dataset_template/list", api.manifest["dataset_templates"]["input"]),
        ("/registry/entity/model_run_workflow/list", api.manifest["workflow_template"]),
        ("/registry/agent/person/list", api.person("alice")),
    ):
        items = api.post("bob", path, {}).json()["items"]
        assert seeded in [i["id"] for i in items], path


# --------------------------------------------------------------------------- model runs


def test_register_a_run_end_to_end(api: Api) -> None:
    output = api.mint("alice", "Hourly means")
    job = api.register("alice", api.record([api.handle("reef-temperatures")], [output]))
    assert list(job) == JOB_KEYS
    assert (job["job_type"], job["job_sub_type"], job["status"], job["info"]) == (
        "PROV_LODGE",
        "MODEL_RUN_PROV_LODGE",
        "SUCCEEDED",
        None,
    )
    assert (job["username"], job["batch_id"], job["gsi_status"]) == ("alice", None, "ok")
    assert job["payload"]["revalidate"] is False
    result = job["result"]["record"]
    assert list(result) == ["id", "prov_json", "record"]
    assert result["record"]["inputs"][0]["dataset_id"] == api.handle("reef-temperatures")
    prov = json.loads(result["prov_json"])
    assert prov["activity"][result["id"]]["item_subtype"] == "MODEL_RUN"

    run = api.get("bob", "/registry/activity/model_run/fetch", id=result["id"]).json()
    assert list(run["item"]) == [
        "display_name",
        "user_metadata",
        "record_status",
        "record",
        "prov_serialisation",
        *ITEM_TAIL,
    ]
    assert run["item"]["record_status"] == "LODGED"
    assert run["item"]["prov_serialisation"] == result["prov_json"]
    assert [h["reason"] for h in run["item"]["history"]] == [
        "Updating item to mark completion of provenance lodge.",
        "Initial record creation",
    ]
    assert run["item"]["history"][1]["item"]["record_status"] == "COMPLETE"
    assert (run["item"]["owner_username"], run["item"]["item_category"]) == ("alice", "ACTIVITY")
    assert (run["item"]["workflow_links"], run["item"]["versioning_info"]) == (None, None)

    upstream = api.get("bob", "/explore/upstream", starting_id=output, depth=2).json()
    assert upstream["status"] == {
        "success": True,
        "details": "Made lineage query (with depth 2) to neo4j backend.",
    }
    found = {(ln["source"], ln["target"], ln["type"]) for ln in upstream["graph"]["links"]}
    assert (output, result["id"], "wasGeneratedBy") in found
    assert (result["id"], api.handle("reef-temperatures"), "used") in found
    assert (result["id"], api.manifest["model"], "used") in found
    assert (output, api.person("alice"), "wasAttributedTo") in found
    assert upstream["record_count"] == len(upstream["graph"]["nodes"])

    others = api.get("bob", "/jobs/user/fetch", session_id=job["session_id"])
    assert (others.status_code, others.json()) == (
        401,
        {"detail": "Not authorised to view this record."},
    )
    missing = api.get("bob", "/jobs/user/fetch", session_id="no-such-session")
    assert (missing.status_code, missing.json()) == (400, {"detail": "Item was not found."})
    mine = api.post("alice", "/jobs/user/list", {"limit": 1000}).json()
    assert job["session_id"] in [j["session_id"] for j in mine["jobs"]]
    assert all(j["username"] == "alice" for j in mine["jobs"])
    assert job["session_id"] not in [
        j["session_id"] for j in api.post("bob", "/jobs/user/list", {"limit": 1000}).json()["jobs"]
    ]
    first = api.post("alice", "/jobs/user/list", {"limit": 1}).json()
    following = api.post(
        "alice", "/jobs/user/list", {"limit": 1, "pagination_key": first["pagination_key"]}
    ).json()
    assert first["jobs"][0]["session_id"] != following["jobs"][0]["session_id"]


def invalid(api: Api, record: dict[str, Any], user: str = "alice") -> str:
    response = api.post(user, "/model_run/register", record)
    assert response.status_code == 400, response.text
    detail: str = response.json()["detail"]
    prefix = "Failed to validate an entity's ID in the record, error: "
    assert detail.startswith(prefix) and detail.endswith(".")
    return detail[len(prefix) : -1]


def test_register_validation_answers(api: Api, store: LocalStore) -> None:
    reef = api.handle("reef-temperatures")
    templates = api.manifest["dataset_templates"]
    before = settled(api)
    assert invalid(api, api.record([reef], [], workflow_template_id="10378.1/1")) == (
        "Provided model run workflow definition with id 10378.1/1 was not a valid id, error:"
        " Failed to retrieve item with details: Could not find the given key (10378.1/1) in the"
        " registry. Details \"Failed to find item. Is the ID ('10378.1/1') correct and in the"
        ' database?"..'  # the registry's, the validator's and the route's full stops
    )
    assert invalid(api, api.record(["10378.1/1"], [])).startswith(
        f"An input dataset validation process failed, type DATA_STORE, template id"
        f" {templates['input']}, reason Input dataset with id 10378.1/1 was not a valid id"
    )
    extra = api.record([reef], [])
    extra["inputs"][0]["resources"] = {"config": "run.yaml"}
    assert invalid(api, extra).endswith(
        "provided unexpected deferred resource paths for the following unexpected resource"
        " keys (config).."
    )
    assert invalid(api, api.record([reef], [], associations={"modeller_id": reef})).startswith(
        f"Modeller with id {reef} was not a valid person, error: Failed to retrieve item"
    )
    wrong_template = api.record([reef], [])
    wrong_template["inputs"][0]["dataset_template_id"] = api.manifest["model"]
    response = api.post("alice", "/model_run/register", wrong_template)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(
        f"An input template in the payload (id: {api.manifest['model']}) does not exist"
    )
    backwards = api.record([reef], [], start_time=10, end_time=5)
    assert api.post("alice", "/model_run/register", backwards).status_code == 422
    assert (
        api.post("alice", "/model_run/register", api.record([], [], display_name="")).status_code
        == 422
    )
    assert settled(api) == before  # nothing was registered, no job queued

    # a template with a required input, deferred resources and required annotations
    template = api.post(
        "alice",
        "/registry/entity/dataset_template/create",
        {
            "display_name": "forcing",
            "deferred_resources": [
                {"key": "forcing", "description": "forcing file", "usage_type": "FORCING_DATA"},
                {
                    "key": "extra",
                    "description": "optional",
                    "usage_type": "GENERAL_DATA",
                    "optional": True,
                },
            ],
        },
    ).json()["created_item"]["id"]
    workflow = api.post(
        "alice",
        "/registry/entity/model_run_workflow/create",
        {
            "display_name": "strict",
            "software_id": api.manifest["model"],
            "input_templates": [{"template_id": template}],
            "annotations": {"required": ["seed"], "optional": []},
        },
    ).json()
    assert workflow["status"]["success"], workflow
    strict = workflow["created_item"]["id"]
    missing_input = api.record([], [], workflow_template_id=strict)
    assert invalid(api, missing_input) == (
        f"The workflow definition expects dataset with template ID {template} but it was not"
        " present in the inputs."
    )
    run = api.record([], [], workflow_template_id=strict, annotations={"other": "x"})
    run["inputs"] = [
        {"dataset_template_id": template, "dataset_id": reef, "dataset_type": "DATA_STORE"}
    ]
    assert invalid(api, run).endswith(
        "was missing deferred resource paths for the following required resource keys (forcing).."
    )
    run["inputs"][0]["resources"] = {"forcing": "data/forcing.nc"}
    assert invalid(api, run) == "Missing required annotations with keys: (seed)."
    run["annotations"] = {"seed": "42", "free.key": "extra keys are accepted"}
    assert api.register("alice", run)["status"] == "SUCCEEDED"


def test_runs_may_not_name_datasets_the_caller_cannot_see(api: Api, store: LocalStore) -> None:
    before = settled(api)
    record = api.record([api.handle("private-bob")], [])
    response = api.post("alice", "/model_run/register", record)
    assert (response.status_code, response.json()) == (
        401,
        {
            "detail": "Registry API denied access to resource: 401. Error: You are not"
            " authorised to fetch this item."
        },
    )
    assert api.post("reader", "/model_run/register", record).json() == WRONG_ROLE
    assert api.post(None, "/model_run/register", record).json() == NOT_AUTHENTICATED
    assert settled(api) == before
    assert (
        api.register(
            "bob",
            api.record(
                [api.handle("private-bob")], [], associations={"modeller_id": api.person("bob")}
            ),
        )["status"]
        == "SUCCEEDED"
    )


def test_update_replaces_the_runs_graph(api: Api) -> None:
    first, second = api.handle("reef-temperatures"), api.handle("big-binary")
    run = api.register("alice", api.record([first], []))["result"]["record"]["id"]
    response = api.post(
        "alice",
        "/model_run/update",
        {"model_run_id": run, "reason": "Wrong input", "record": api.record([second], [])},
    )
    assert list(response.json()) == ["session_id"]
    job = api.job("alice", response.json()["session_id"])
    assert (job["job_sub_type"], job["status"]) == ("MODEL_RUN_UPDATE", "SUCCEEDED")
    item = api.get("alice", "/registry/activity/model_run/fetch", id=run).json()["item"]
    assert [h["reason"] for h in item["history"]][:2] == [
        "Updating item to mark completion of provenance lodge.",
        "Wrong input",
    ]
    assert item["record"]["inputs"][0]["dataset_id"] == second
    used = api.get("alice", "/explore/upstream", starting_id=run, depth=1).json()["graph"]
    targets = {ln["target"] for ln in used["links"] if ln["type"] == "used"}
    assert second in targets and first not in targets

    foreign = api.post(
        "bob",
        "/model_run/update",
        {
            "model_run_id": run,
            "reason": "mine now",
            "record": api.record([first], [], associations={"modeller_id": api.person("bob")}),
        },
    )
    failed = api.job("bob", foreign.json()["session_id"])
    assert failed["status"] == "FAILED"
    assert "not authorised to edit the item" in failed["info"]
    assert (
        api.get("alice", "/registry/activity/model_run/fetch", id=run).json()["item"]["record"][
            "inputs"
        ][0]["dataset_id"]
        == second
    )


def test_batch_registration(api: Api) -> None:
    records = [api.record([api.handle("reef-temperatures")], []) for _ in range(2)]
    response = api.post("alice", "/model_run/register_batch", {"records": records}).json()
    assert response["status"]["success"] is True
    parent = api.job("alice", response["session_id"])
    assert (parent["job_sub_type"], parent["status"], parent["info"]) == (
        "MODEL_RUN_BATCH_SUBMIT",
        "SUCCEEDED",
        "Successfully distributed batch jobs to queue.",
    )
    batch = parent["result"]["batch_id"]
    children = api.post("alice", "/jobs/user/list_batch", {"batch_id": batch}).json()["jobs"]
    assert len(children) == 2
    assert {api.job("alice", c["session_id"])["status"] for c in children} == {"SUCCEEDED"}
    assert all(c["payload"]["revalidate"] is True for c in children)
    refused = api.post("bob", "/jobs/user/list_batch", {"batch_id": batch})
    assert (refused.status_code, refused.json()) == (
        401,
        {"detail": "Batch contains items which you do not own. Not authorised."},
    )


def test_not_served_prov_routes_say_so(api: Api) -> None:
    for method, path in (
        ("POST", "/model_run/edit/link_to_study"),
        ("GET", "/bulk/generate_template/csv"),
        ("POST", "/bulk/convert_model_runs/csv"),
        ("POST", "/explore/generate/report"),
    ):
        response = api.http.request(method, path, headers=api.headers("alice"))
        assert response.status_code == 501, path
        assert response.json()["detail"].startswith(
            f"The local data store does not serve {method} {path}"
        )


# --------------------------------------------------------------------------- lineage


def test_lineage_depth_rules(api: Api) -> None:
    start = api.handle("versioned-v3")
    default = api.get("bob", "/explore/upstream", starting_id=start).json()
    assert default["status"]["details"] == "Made lineage query (with depth 2) to neo4j backend."
    special = api.get("bob", "/explore/special/contributing_datasets", starting_id=start).json()
    assert special["status"]["details"] == (
        "Made upstream contribution query (with depth 4) to neo4j backend."
    )
    # the version chain: v3 wasGeneratedBy a VERSION activity that used v2, which came from v1
    datasets = {n["id"] for n in special["graph"]["nodes"] if n["item_subtype"] == "DATASET"}
    assert {api.handle("versioned-v1"), api.handle("versioned-v2"), start} <= datasets
    kinds = {n["item_subtype"] for n in special["graph"]["nodes"]}
    assert "PERSON" not in kinds and "VERSION" in kinds
    too_deep = api.get("bob", "/explore/upstream", starting_id=start, depth=11)
    assert (too_deep.status_code, too_deep.json()) == (
        400,
        {"detail": "Depth provided is in excess of depth maximum: 10."},
    )
    assert api.get("bob", "/explore/upstream", starting_id=start, depth=10).status_code == 200
    unknown = api.get("bob", "/explore/downstream", starting_id="10378.1/1")
    assert (unknown.status_code, unknown.json()) == (
        500,
        {
            "detail": "The provided id 10378.1/1 was not a valid registry                item."
            " Error from registry lookup: ."
        },
    )
    assert api.get("reader", "/explore/upstream", starting_id=start).status_code == 200
    assert api.get(None, "/explore/upstream", starting_id=start).json() == NOT_AUTHENTICATED
    # the version job the data store handed out recorded the activity
    session = api.get("admin", "/registry/items/fetch-dataset", handle_id=start).json()["item"][
        "workflow_links"
    ]["version_activity_workflow_id"]
    job = api.job("alice", session)
    assert (job["job_sub_type"], job["status"]) == ("REGISTER_VERSION_ACTIVITY", "SUCCEEDED")
    version = api.get(
        "bob", "/registry/activity/version/fetch", id=job["result"]["version_activity_id"]
    ).json()["item"]
    assert (version["from_item_id"], version["to_item_id"], version["new_version_number"]) == (
        api.handle("versioned-v2"),
        start,
        3,
    )


def test_mint_needs_a_person_and_records_its_creation(api: Api, store: LocalStore) -> None:
    document = api.get("admin", "/registry/items/fetch-dataset", handle_id=api.handle("history"))
    before = settled(api)
    response = api.post(
        "erin", "/register/mint-dataset", document.json()["item"]["collection_format"]
    )
    assert (response.status_code, response.json()) == (
        500,
        {
            "detail": "Unexpected non 200 status code in dataset minting process. Status code:"
            f" 400. Details: {LINK_REQUIRED}."
        },
    )
    version = api.post(
        "erin", "/register/version", {"id": api.handle("reef-temperatures"), "reason": "x"}
    )
    assert version.status_code == 400
    assert settled(api) == before
    handle = api.mint("carol", "Created with provenance")
    session = api.get("carol", "/registry/items/fetch-dataset", handle_id=handle).json()["item"][
        "workflow_links"
    ]["create_activity_workflow_id"]
    assert api.job("carol", session)["status"] == "SUCCEEDED"
    lodged = api.job("carol", api.job("carol", session)["result"]["lodge_session_id"])
    assert lodged["status"] == "SUCCEEDED"
    upstream = api.get("carol", "/explore/upstream", starting_id=handle, depth=1).json()["graph"]
    assert {(ln["target"], ln["type"]) for ln in upstream["links"]} >= {
        (api.person("carol"), "wasAttributedTo")
    }
    assert "CREATE" in {n["item_subtype"] for n in upstream["nodes"]}


# --------------------------------------------------------------------------- search


def test_search(api: Api) -> None:
    def search(user: str, **params: Any) -> httpx.Response:
        return api.get(user, "/search/entity-registry", **params)

    hits = search("alice", query="reef temperatures").json()
    assert list(hits) == ["status", "results", "warnings"]
    assert hits["warnings"] is None
    assert hits["results"][0]["id"] == api.handle("reef-temperatures")
    assert hits["status"]["details"] == f"Returned {len(hits['results'])} results with no issues."
    everything = search("alice", query="sample", subtype_filter="DATASET")
    assert len(everything.json()["results"]) == 10  # the default size
    assert len(search("alice", query="sample", record_limit=3).json()["results"]) == 3
    assert len(search("alice", query="sample", record_limit=500).json()["results"]) > 10
    # not filtered by permission, as the real search API is not
    private = search("alice", query="private-bob").json()["results"]
    assert api.handle("private-bob") in [hit["id"] for hit in private]
    people = search("alice", query="Anderson", subtype_filter="PERSON").json()["results"]
    assert [hit["id"] for hit in people] == [api.person("alice")]
    assert search("alice", query="x", subtype_filter="NOT_A_TYPE").status_code == 422
    assert search("alice", query="").json()["results"] == []
    assert api.get(None, "/search/entity-registry", query="reef").json() == NOT_AUTHENTICATED

    # the index follows metadata updates, reverts and versions
    handle = api.mint("alice", "Searchable dataset")
    item = api.get("alice", "/registry/items/fetch-dataset", handle_id=handle).json()["item"]
    changed = item["collection_format"]
    changed["dataset_info"]["keywords"] = ["zooxanthellae"]
    assert (
        api.post(
            "alice", "/register/update-metadata", changed, handle_id=handle, reason="kw"
        ).status_code
        == 200
    )
    assert [h["id"] for h in search("alice", query="zooxanthellae").json()["results"]] == [handle]
    assert (
        api.put(
            "alice", "/register/revert-metadata", {"id": handle, "history_id": 0, "reason": "undo"}
        ).status_code
        == 200
    )
    assert search("alice", query="zooxanthellae").json()["results"] == []
    new = api.post("alice", "/register/version", {"id": handle, "reason": "v2"}).json()
    found = [h["id"] for h in search("alice", query="Searchable").json()["results"]]
    assert new["new_version_id"] in found and handle in found


# --------------------------------------------------------------------------- access, locks, release


def test_dataset_access_settings(api: Api, store: LocalStore) -> None:
    handle = api.mint("alice", "Access settings")
    path = "/registry/entity/dataset/auth/configuration"
    settings = api.get("alice", path, id=handle).json()
    assert settings == {
        "owner": "alice",
        "general": ["metadata-read", "dataset-data-read"],
        "groups": {},
    }
    before = settled(api)
    refused = api.get("bob", path, id=handle)
    assert (refused.status_code, refused.json()) == (
        401,
        {
            "detail": "You are not authorised to view the access configuration for item"
            f" id='{handle}'."
        },
    )
    forged = api.put("bob", path, {**settings, "general": []}, id=handle)
    assert (forged.status_code, forged.json()) == (
        401,
        {
            "detail": "You are not authorised to edit the access configuration for item"
            f" id='{handle}'."
        },
    )
    assert api.put("alice", path, {**settings, "owner": "bob"}, id=handle).json() == {
        "detail": "The owner of a resource cannot be changed. Old: alice, New: bob."
    }
    bad_role = api.put("alice", path, {**settings, "general": ["owner"]}, id=handle)
    assert bad_role.status_code == 400
    assert "Invalid roles: {'owner'}" in bad_role.json()["detail"]
    assert api.put("alice", path, settings, id=api.person("alice")).status_code == 400
    assert api.put("reader", path, settings, id=handle).json() == WRONG_ROLE
    assert table_digest(store) == before

    done = api.put("alice", path, {**settings, "general": []}, id=handle).json()
    assert done == {
        "status": {
            "success": True,
            "details": "Successfully updated the authorisation configuration for item"
            f" id='{handle}'.",
        }
    }
    assert api.get("bob", "/registry/entity/dataset/auth/evaluate", id=handle).json() == {
        "roles": []
    }
    assert api.get("alice", "/registry/items/fetch-dataset", handle_id=handle).status_code == 200
    assert api.get("bob", "/registry/items/fetch-dataset", handle_id=handle).status_code == 401
    roles = api.get("bob", "/registry/entity/dataset/auth/roles").json()["roles"]
    assert [role["role_name"] for role in roles] == [
        "metadata-read",
        "metadata-write",
        "admin",
        "dataset-data-read",
        "dataset-data-write",
    ]
    assert list(roles[0]) == ["role_display_name", "role_name", "description", "also_grants"]


def test_lock_routes(api: Api) -> None:
    handle = api.mint("alice", "Locks")
    lock = {"id": handle, "reason": "Frozen for the paper"}
    assert api.put("bob", "/registry/entity/dataset/locks/lock", lock).json() == {
        "detail": "You are not authorised to lock this item."
    }
    assert api.put("alice", "/registry/entity/dataset/locks/lock", lock).json() == {
        "status": {"success": True, "details": "Resource locked successfully."}
    }
    again = api.put("alice", "/registry/entity/dataset/locks/lock", lock)
    assert (again.status_code, again.json()) == (400, {"detail": "Resource is already locked."})
    assert (
        api.get("bob", "/registry/items/fetch-dataset", handle_id=handle).json()["locked"] is True
    )
    history = api.get("bob", "/registry/entity/dataset/locks/history", id=handle).json()
    assert history["status"]["details"] == "Successfully fetched the lock history"
    assert [(e["action_type"], e["username"], e["reason"]) for e in history["history"]] == [
        ("LOCK", "alice", "Frozen for the paper")
    ]
    before = table_digest(api.store)
    by_bob = api.put("bob", "/registry/entity/dataset/locks/unlock", lock)
    assert (by_bob.status_code, by_bob.json()) == (  # Provena's one message for both routes
        401,
        {"detail": "You are not authorised to lock this item."},
    )
    assert table_digest(api.store) == before
    assert api.get("bob", "/registry/entity/dataset/locks/locked", id=handle).json() == {
        "locked": True
    }
    assert api.put("alice", "/registry/entity/dataset/locks/unlock", lock).status_code == 200
    unlocked = api.put("alice", "/registry/entity/dataset/locks/unlock", lock)
    assert unlocked.json() == {"detail": "Cannot unlock already unlocked resource."}
    assert api.get("bob", "/registry/entity/dataset/locks/locked", id=handle).json() == {
        "locked": False
    }
    missing = api.get("bob", "/registry/entity/dataset/locks/history", id="10378.1/1")
    assert missing.json() == {
        "detail": "Failed to retrieve ID 10378.1/1 from the lock table, are you sure it exists?"
    }


def test_release_review_uses_linked_persons(api: Api, store: LocalStore) -> None:
    handle = api.mint("bob", "For review")
    reviewer = api.person("admin")
    request = {"dataset_id": handle, "approver_id": reviewer, "notes": "please"}
    unlinked = api.post("erin", "/release/approval-request", request)
    assert unlinked.json() == {
        "detail": "You cannot request a review without having a linked Person in the registry."
    }
    before = table_digest(store)
    not_admin = api.post("alice", "/release/approval-request", request)
    assert not_admin.status_code == 401
    assert "Only admins of datasets can request" in not_admin.json()["detail"]
    own = {"dataset_id": handle, "approve": True, "notes": "my own"}
    by_requester = api.put("bob", "/release/action-approval-request", own)
    assert by_requester.status_code == 401
    assert "You are not a dataset reviewer" in by_requester.json()["detail"]
    assert table_digest(store) == before
    by_name = api.post("bob", "/release/approval-request", {**request, "approver_id": "admin"})
    assert by_name.status_code == 400 and "is not a system dataset reviewer" in by_name.text
    assert api.post("bob", "/release/approval-request", request).status_code == 200
    item = api.get("bob", "/registry/items/fetch-dataset", handle_id=handle).json()["item"]
    assert item["release_history"][0]["requester"] == api.person("bob")

    queue = {"filter_by": {"release_reviewer": reviewer}}
    mine = api.post("admin", "/registry/entity/dataset/user/releases", queue).json()
    assert list(mine) == ["status", "dataset_items", "total_dataset_count", "pagination_key"]
    assert handle in [d["id"] for d in mine["dataset_items"]]
    before = settled(api)
    snooping = api.post("alice", "/registry/entity/dataset/user/releases", queue)
    assert snooping.status_code == 403
    assert snooping.json()["detail"] == (
        "You can only search for your own dataset releases. User requesting is not the same as"
        ' the release reviewer id. requesting username and ID are "alice"" and'
        f' "{api.person("alice")}". Reviewer ID filter is {reviewer}.'
    )
    no_filter = api.post("alice", "/registry/entity/dataset/user/releases", {"filter_by": {}})
    assert no_filter.json() == {
        "detail": "release reviewer id must be specified inside of filter_by"
    }

    action = {"dataset_id": handle, "approve": True, "notes": "ok"}
    not_reviewer = api.put("carol", "/release/action-approval-request", action)
    assert (not_reviewer.status_code, not_reviewer.json()["detail"]) == (
        401,
        "You are not a dataset reviewer. Only system dataset reviewers can perform this action."
        " Contact system admins to request to be a reviewer.",
    )
    assert table_digest(store) == before
    assert (
        api.post("admin", "/release/sys-reviewers/add", reviewer_id=api.person("carol")).json()
        is None
    )
    not_approver = api.put("carol", "/release/action-approval-request", action)
    assert not_approver.status_code == 401
    assert "is not the approver for dataset" in not_approver.json()["detail"]
    approved = api.put("admin", "/release/action-approval-request", action).json()
    assert approved == {
        "dataset_id": handle,
        "approved": True,
        "details": "Succesfully responded to dataset release approval request.",
    }
    item = api.get("bob", "/registry/items/fetch-dataset", handle_id=handle).json()["item"]
    assert (item["release_status"], item["release_approver"]) == ("RELEASED", reviewer)


# --------------------------------------------------------------------------- attackers


def test_forged_tokens_and_crafted_ids_change_nothing(api: Api, store: LocalStore) -> None:
    forged = api.tokens.get("alice") or issue_token(store, "alice")
    head, payload, signature = forged.split(".")
    tampered = f"{head}.{payload}.{signature[:-4]}AAAA"
    routes = [
        ("GET", "/jobs/user/fetch", {"session_id": "x"}),
        ("POST", "/jobs/user/list", None),
        ("GET", "/link/user/lookup", None),
        ("POST", "/model_run/register", None),
        ("GET", "/explore/upstream", {"starting_id": "x"}),
        ("GET", "/search/entity-registry", {"query": "x"}),
        ("GET", "/registry/general/fetch", {"id": "x"}),
        ("PUT", "/registry/entity/dataset/auth/configuration", {"id": "x"}),
    ]
    before = settled(api)
    for method, path, params in routes:
        for headers in (
            {"Authorization": f"Bearer {tampered}"},
            {"Authorization": "Bearer not-a-jwt"},
            {"Authorization": f"Basic {forged}"},
            {},
        ):
            response = api.http.request(method, path, params=params, json={}, headers=headers)
            assert response.status_code == 401, (path, list(headers))
            bearer = headers.get("Authorization", "").startswith("Bearer")
            assert response.json() == (UNAUTHENTICATED if bearer else NOT_AUTHENTICATED)
            assert response.headers["www-authenticate"] == "Bearer"
    for crafted in ("../../etc/passwd", "10378.1/1\x00", "10378.1/" + "9" * 5000, "' OR 1=1 --"):
        fetch = api.get("alice", "/registry/entity/dataset/fetch", id=crafted)
        assert (fetch.status_code, fetch.json()["status"]["success"]) == (200, False)
        general = api.get("alice", "/registry/general/fetch", id=crafted)
        assert (general.status_code, general.json()["item"]) == (200, None)
        assert api.get("alice", "/jobs/user/fetch", session_id=crafted).status_code == 400
        assert api.get("alice", "/explore/upstream", starting_id=crafted).status_code == 500
        assert (
            api.get("alice", "/registry/entity/dataset/auth/configuration", id=crafted).status_code
            == 400
        )
        lock = api.put(
            "alice", "/registry/entity/dataset/locks/lock", {"id": crafted, "reason": "x"}
        )
        assert lock.status_code == 400
        assert api.post("alice", "/link/user/assign", {"person_id": crafted}).status_code == 400
        assert api.get("alice", "/search/entity-registry", query=crafted).status_code == 200
    assert table_digest(store) == before


# Routes anyone may call, as in Provena: the local store's discovery document and index, the
# OpenAPI document, and the realm's own endpoints (login, certificates, well-known).
PUBLIC_ROUTES = {"/", "/.well-known/provenafs", "/openapi.json"}


def test_every_other_route_refuses_a_forged_or_missing_token(api: Api, store: LocalStore) -> None:
    forged = api.tokens.get("alice") or issue_token(store, "alice")
    head, payload, signature = forged.split(".")
    tampered = f"{head}.{payload}.{signature[:-4]}AAAA"
    paths = api.http.get("/openapi.json").json()["paths"]
    before = settled(api)
    checked = []
    for path, operations in sorted(paths.items()):
        if path in PUBLIC_ROUTES or path.startswith("/auth/realms/"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method in operations:
            for headers in ({"Authorization": f"Bearer {tampered}"}, {}):
                answer = api.http.request(method.upper(), concrete, json={}, headers=headers)
                assert answer.status_code == 401, (method, path, list(headers), answer.text)
            checked.append(f"{method.upper()} {path}")
    assert len(checked) >= 80, checked  # the sweep saw the data store and every service
    assert table_digest(store) == before
