"""The Panoptes sandbox speaks the wire format the real panoptes-client expects.

Every operation crowdloop uses goes through the real ``panoptes-client`` against the sandbox,
then the simulated crowd and each scripted fault are checked. No database is needed except by the
management command test at the end.
"""

from __future__ import annotations

import csv
import io
import json
import time
import types
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import panoptes_client.exportable
import panoptes_client.panoptes
import panoptes_client.subject
import pytest
import redo
import requests
from panoptes_client import (
    Classification,
    Panoptes,
    Project,
    Subject,
    SubjectSet,
    SubjectWorkflowStatus,
    Workflow,
)
from panoptes_client.panoptes import PanoptesAPIException
from panoptes_client.set_member_subject import SetMemberSubject

from annotate.zooniverse.sandbox import (
    CLASSIFICATION_EXPORT_COLUMNS,
    SUBJECT_EXPORT_COLUMNS,
    WORKFLOW_EXPORT_COLUMNS,
    CrowdConfig,
    FaultAction,
    FaultRule,
    Sandbox,
    SandboxServer,
    serve,
)

VOCABULARY = ["painting", "drawing", "map", "photograph"]
KEYS = ["painting", "drawing", "map", "photo"]
JSONAPI = {"Accept": "application/vnd.api+json; version=1"}


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's retries and export polling sleep for seconds; record the sleeps instead."""
    sleeps: list[float] = []
    # redo refuses a sleep time below its jitter (1 s), so keep 2 s and skip the actual sleep.
    monkeypatch.setattr(panoptes_client.panoptes, "RETRY_BACKOFF_INTERVAL", 2)
    monkeypatch.setattr(panoptes_client.subject, "RETRY_BACKOFF_INTERVAL", 2)
    monkeypatch.setattr(redo, "time", types.SimpleNamespace(sleep=sleeps.append, time=time.time))
    monkeypatch.setattr(
        panoptes_client.exportable, "time", types.SimpleNamespace(sleep=sleeps.append)
    )
    return sleeps


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(VOCABULARY, keys=KEYS, retirement_count=3)


@pytest.fixture
def server(sandbox: Sandbox) -> Iterator[SandboxServer]:
    server, thread = serve("127.0.0.1", 0, sandbox=sandbox)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def client(server: SandboxServer) -> Iterator[Panoptes]:
    # panoptes-client keeps its default client in a thread-local: connect per test, forget after.
    connected = Panoptes.connect(
        endpoint=server.endpoint, client_id="crowdloop-test", client_secret="any-secret"
    )
    yield connected
    Panoptes._local.panoptes_client = None


def upload(
    n: int, *, set_name: str = "round-1", truth: list[list[str]] | None = None, link: bool = True
) -> tuple[SubjectSet, list[Subject]]:
    """Upload n remote-URL subjects the way crowdloop does, into a new set linked to workflow 1."""
    project = Project.find(1)
    subject_set = SubjectSet()
    subject_set.links.project = project
    subject_set.display_name = set_name
    subject_set.save()
    subjects = []
    for i in range(n):
        subject = Subject()
        subject.links.project = project
        subject.add_location({"image/jpeg": f"https://images.example.org/{set_name}/{i}.jpg"})
        subject.metadata.update(
            {
                "external_id": f"{set_name}-item-{i}",
                "#priority": n - i,
                "#truth": (truth[i % len(truth)] if truth else ["painting"]),
            }
        )
        subject.save()
        subjects.append(subject)
    subject_set.add(subjects)
    if link:
        Workflow.find(1).add_subject_sets([subject_set])
    return subject_set, subjects


def api(server: SandboxServer, method: str, path: str, **kwargs: object) -> requests.Response:
    headers = {**JSONAPI, "Authorization": "Bearer test", **kwargs.pop("headers", {})}
    return requests.request(
        method, server.endpoint + "/api" + path, headers=headers, timeout=5, **kwargs
    )


def log_of(sandbox: Sandbox, path_part: str) -> list[tuple[str, str, int]]:
    return [(e.method, e.path, e.status) for e in sandbox.request_log if path_part in e.path]


# --------------------------------------------------------------------------- connecting


def test_client_credentials_connect_gets_a_token_and_finds_the_project(
    server: SandboxServer, sandbox: Sandbox
) -> None:
    Panoptes.connect(endpoint=server.endpoint, client_id="id", client_secret="secret")
    try:
        project = Project.find(1)
        assert project.display_name == "crowdloop sandbox"
        assert [w.id for w in project.links.workflows] == ["1"]
        grants = [
            e.query.get("grant_type") for e in sandbox.request_log if e.path == "/oauth/token"
        ]
        assert grants == ["client_credentials"]
        assert all("client_secret" not in e.query for e in sandbox.request_log)
    finally:
        Panoptes._local.panoptes_client = None


def test_password_login_signs_in_with_the_csrf_token_then_gets_a_password_grant(
    server: SandboxServer, sandbox: Sandbox
) -> None:
    connected = Panoptes.connect(endpoint=server.endpoint, username="bot", password="pw")
    try:
        assert connected.logged_in_user_id >= 5001
        assert Workflow.find(1).display_name
        calls = [(e.method, e.path) for e in sandbox.request_log if not e.path.startswith("/api")]
        assert calls == [
            ("GET", "/users/sign_in"),
            ("POST", "/users/sign_in"),
            ("POST", "/oauth/token"),
        ]
        assert sandbox.request_log[2].query["grant_type"] == "password"
    finally:
        Panoptes._local.panoptes_client = None


def test_a_token_close_to_expiry_is_renewed_with_the_refresh_token_grant(
    sandbox: Sandbox, server: SandboxServer
) -> None:
    sandbox.token_ttl_s = 60  # inside the client's 2-minute renewal buffer
    Panoptes.connect(endpoint=server.endpoint, client_id="id", client_secret="secret")
    try:
        Project.find(1)
        Workflow.find(1)
        grants = [e.query["grant_type"] for e in sandbox.request_log if e.path == "/oauth/token"]
        assert grants == ["client_credentials", "refresh_token"]
    finally:
        Panoptes._local.panoptes_client = None


def test_the_api_is_not_found_without_the_json_api_accept_header(server: SandboxServer) -> None:
    plain = requests.get(server.endpoint + "/api/projects/1", timeout=5)
    assert plain.status_code == 404
    assert plain.json() == {"errors": [{"message": "Not Found"}]}
    assert api(server, "GET", "/projects/1").status_code == 200


def test_writes_without_a_bearer_token_are_401(server: SandboxServer) -> None:
    response = requests.post(
        server.endpoint + "/api/subject_sets", headers=JSONAPI, json={"subject_sets": {}}, timeout=5
    )
    assert response.status_code == 401
    assert "errors" in response.json()


def test_resources_come_as_arrays_with_string_ids_and_an_etag(server: SandboxServer) -> None:
    response = api(server, "GET", "/workflows/1")
    body = response.json()
    assert response.headers["ETag"].startswith('W/"')
    (workflow,) = body["workflows"]
    assert workflow["id"] == "1"
    assert workflow["links"]["project"] == "1"
    assert workflow["prioritized"] is True
    assert workflow["retirement"] == {"criteria": "classification_count", "options": {"count": 3}}
    assert workflow["tasks"]["T0"]["type"] == "multiple"
    assert workflow["strings"]["T0.question"] == "Which of these labels apply?"
    assert [workflow["strings"][f"T0.answers.{i}.label"] for i in range(4)] == VOCABULARY
    assert api(server, "GET", "/workflows/99").status_code == 404


def test_the_default_retirement_is_fifteen_classifications() -> None:
    assert Sandbox(["a"]).workflow().retirement_count == 15


# --------------------------------------------------------------------------- uploading


def test_a_subject_set_is_created_and_renamed_with_if_match(
    client: Panoptes, sandbox: Sandbox
) -> None:
    subject_set = SubjectSet()
    subject_set.links.project = Project(1)
    subject_set.display_name = "round-7"
    subject_set.save()
    assert subject_set.id == "11"
    assert subject_set.etag

    loaded = SubjectSet.find(subject_set.id)
    loaded.display_name = "round-7b"
    loaded.save()
    assert sandbox.subject_sets()[0].display_name == "round-7b"
    put = [e for e in sandbox.request_log if e.method == "PUT"]
    assert put and put[0].status == 200


def test_a_subject_keeps_its_remote_url_metadata_and_priority(
    client: Panoptes, sandbox: Sandbox
) -> None:
    subject_set, subjects = upload(2)
    assert subjects[0].locations == [{"image/jpeg": "https://images.example.org/round-1/0.jpg"}]
    assert subjects[0].metadata["external_id"] == "round-1-item-0"
    members = sandbox.set_members(int(subject_set.id))
    assert [(m.subject_id, m.priority) for m in members] == [
        (int(subjects[0].id), 2.0),
        (int(subjects[1].id), 1.0),
    ]
    assert Subject.find(subjects[1].id).links.subject_sets[0].id == subject_set.id


def test_subject_set_add_checks_each_membership_then_posts_one_link_batch(
    client: Panoptes, sandbox: Sandbox
) -> None:
    subject_set, subjects = upload(3, link=False)
    assert log_of(sandbox, "/set_member_subjects") == [("GET", "/api/set_member_subjects", 200)] * 3
    assert log_of(sandbox, "/links/subjects") == [
        ("POST", f"/api/subject_sets/{subject_set.id}/links/subjects", 200)
    ]
    # Adding the same subjects again finds them linked and posts nothing.
    subject_set.add(subjects)
    assert len(log_of(sandbox, "/links/subjects")) == 1
    assert len(sandbox.set_members(int(subject_set.id))) == 3


def test_a_subject_is_found_by_external_id_by_filter_or_by_listing_its_set(
    client: Panoptes, server: SandboxServer
) -> None:
    subject_set, subjects = upload(25)
    found = api(server, "GET", "/subjects", params={"metadata.external_id": "round-1-item-7"})
    assert [s["id"] for s in found.json()["subjects"]] == [subjects[7].id]
    # The portable way (real Panoptes has no metadata filter): list the set's subjects.
    listed = {s.metadata["external_id"]: s.id for s in Subject.where(subject_set_id=subject_set.id)}
    assert len(listed) == 25
    assert listed["round-1-item-24"] == subjects[24].id


def test_a_workflow_links_and_unlinks_subject_sets(client: Panoptes, sandbox: Sandbox) -> None:
    subject_set, _ = upload(1, link=False)
    workflow = Workflow.find(1)
    workflow.add_subject_sets([subject_set])
    assert sandbox.workflow().subject_set_ids == [int(subject_set.id)]
    assert Workflow.find(1).links.subject_sets[0].id == subject_set.id

    Workflow.find(1).remove_subject_sets([subject_set])
    assert sandbox.workflow().subject_set_ids == []
    assert log_of(sandbox, "/links/subject_sets/")[-1][2] == 204


def test_retire_and_unretire_show_in_subject_workflow_statuses(
    client: Panoptes, sandbox: Sandbox
) -> None:
    _, subjects = upload(2)
    workflow = Workflow.find(1)
    assert workflow.retire_subjects([subjects[0]], reason="consensus") is None  # 204
    statuses = list(
        SubjectWorkflowStatus.where(subject_ids=",".join(s.id for s in subjects), workflow_id=1)
    )
    pairs = [(s.raw["links"]["subject"], s.retirement_reason) for s in statuses]
    assert pairs == [(subjects[0].id, "consensus")]
    assert statuses[0].retired_at

    workflow.unretire_subjects([subjects[0].id])
    (status,) = SubjectWorkflowStatus.where(subject_id=subjects[0].id, workflow_id=1)
    assert status.retired_at is None
    assert [e[2] for e in log_of(sandbox, "retire")] == [204, 204]


def test_retiring_with_an_unknown_reason_is_422(client: Panoptes, server: SandboxServer) -> None:
    _, subjects = upload(1)
    response = api(
        server,
        "POST",
        "/workflows/1/retired_subjects",
        json={"subject_ids": [subjects[0].id], "retirement_reason": "bored"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["message"].startswith("retirement_reason")


def test_a_set_member_subject_priority_put_needs_a_matching_if_match(
    client: Panoptes, sandbox: Sandbox
) -> None:
    subject_set, subjects = upload(1)
    (member,) = SetMemberSubject.where(subject_set_id=subject_set.id, subject_id=subjects[0].id)
    path = f"/set_member_subjects/{member.id}"
    body = {"set_member_subjects": {"priority": 0.5}}
    with pytest.raises(PanoptesAPIException, match="Precondition required"):
        client.put(path, json=body)  # 428
    with pytest.raises(PanoptesAPIException, match="Precondition failed"):
        client.put(path, json=body, etag='W/"stale"')  # 412

    response, etag = client.put(path, json=body, etag=member.etag)
    assert response["set_member_subjects"][0]["priority"] == 0.5
    assert etag != member.etag
    assert sandbox.set_members(int(subject_set.id))[0].priority == 0.5
    statuses = [e.status for e in sandbox.request_log if e.method == "PUT"]
    assert statuses == [428, 412, 200]


# --------------------------------------------------------------------------- reading votes


def test_classifications_page_by_last_id_until_an_empty_page(
    client: Panoptes, sandbox: Sandbox, server: SandboxServer
) -> None:
    upload(5)
    run = sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=5, seed=3))
    assert len(run.classifications) == 15  # 5 subjects x retirement 3

    seen = [
        int(c.id)
        for c in Classification.where(scope="project", project_id=1, last_id=0, page_size=4)
    ]
    assert seen == sorted(c.id for c in run.classifications)
    pages = [e for e in sandbox.request_log if e.path == "/api/classifications/project"]
    assert len(pages) == 5  # 4 + 4 + 4 + 3, then the empty page that ends the walk

    first = api(
        server,
        "GET",
        "/classifications/project",
        params={"project_id": 1, "last_id": 0, "page_size": 4},
    ).json()
    meta = first["meta"]["classifications"]
    assert meta["count"] == 0 and meta["page_count"] == 0
    assert meta["next_href"] == (
        f"/classifications/project?last_id={seen[3]}&page_size=4&project_id=1"
    )
    (c,) = first["classifications"][:1]
    assert c["annotations"][0]["task"] == "T0"
    assert all(isinstance(i, int) for i in c["annotations"][0]["value"])
    assert c["metadata"]["workflow_version"] == "1.1"
    assert c["links"]["subjects"] and isinstance(c["links"]["subjects"][0], str)


def test_last_id_without_project_id_is_422(server: SandboxServer) -> None:
    response = api(server, "GET", "/classifications/project", params={"last_id": 5})
    assert response.status_code == 422
    assert response.json()["errors"][0]["message"] == "Project ID required if last_id is included"


def test_classifications_filter_by_workflow_and_cap_the_page_size(
    client: Panoptes, sandbox: Sandbox, server: SandboxServer
) -> None:
    upload(40)
    sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=4, seed=1))
    page = api(
        server,
        "GET",
        "/classifications/project",
        params={"project_id": 1, "workflow_id": 1, "last_id": 0, "page_size": 500},
    ).json()
    assert len(page["classifications"]) == 100
    assert page["meta"]["classifications"]["page_size"] == 100
    other = api(
        server,
        "GET",
        "/classifications/project",
        params={"project_id": 1, "workflow_id": 2, "last_id": 0},
    ).json()
    assert other["classifications"] == [] and other["meta"]["classifications"]["next_href"] is None


def test_workflow_versions_map_answer_indices_to_labels(
    client: Panoptes, sandbox: Sandbox, server: SandboxServer
) -> None:
    assert sandbox.set_vocabulary(1, [*VOCABULARY, "postcard"]) == "2.2"
    versions = api(server, "GET", "/workflow_versions", params={"workflow_id": 1}).json()
    numbers = [(v["major_number"], v["minor_number"]) for v in versions["workflow_versions"]]
    assert numbers == [(1, 1), (2, 2)]
    assert versions["workflow_versions"][1]["strings"]["T0.answers.4.label"] == "postcard"
    assert Workflow.find(1).version == "2.2"
    assert sandbox.labels(1, "1.1") == VOCABULARY


def test_gold_standard_lists_only_gold_classifications(
    client: Panoptes, sandbox: Sandbox, server: SandboxServer
) -> None:
    upload(10, truth=[["map"], ["drawing", "photo"]])
    run = sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=5, gold_share=0.5, seed=2))
    gold = [c for c in run.classifications if c.gold_standard]
    assert gold
    listed = api(
        server, "GET", "/classifications/gold_standard", params={"workflow_id": 1, "page_size": 100}
    ).json()["classifications"]
    assert [int(c["id"]) for c in listed] == [c.id for c in gold]
    assert all(c["gold_standard"] is True for c in listed)
    # Gold answers are the truth exactly; "photo" is a key, mapped to the "photograph" answer.
    for c in gold:
        assert c.annotations[0]["value"] in ([2], [1, 3])


# --------------------------------------------------------------------------- exports


def test_the_classification_export_carries_label_strings_and_anonymous_names(
    client: Panoptes, sandbox: Sandbox
) -> None:
    upload(6, truth=[["painting", "map"]])
    sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=10, anonymous_share=0.5, seed=4))
    export = Project(1).get_export("classifications", generate=True)
    rows = list(export.csv_dictreader())
    assert tuple(rows[0].keys()) == CLASSIFICATION_EXPORT_COLUMNS
    assert len(rows) == 18

    anonymous = [r for r in rows if r["user_name"].startswith("not-logged-in-")]
    assert anonymous and all(r["user_id"] == "" for r in anonymous)
    assert all(r["user_name"] == "not-logged-in-" + r["user_ip"] for r in anonymous)
    assert all(r["user_id"] for r in rows if r not in anonymous)

    row = rows[0]
    assert row["workflow_version"] == "1.1"
    assert row["created_at"].endswith(" UTC")
    (annotation,) = json.loads(row["annotations"])
    assert annotation["task_label"] == "Which of these labels apply?"
    assert set(annotation["value"]) <= set(VOCABULARY)
    subject_data = json.loads(row["subject_data"])
    assert list(subject_data) == [row["subject_ids"]]
    assert subject_data[row["subject_ids"]]["#truth"] == ["painting", "map"]
    assert subject_data[row["subject_ids"]]["retired"]["retirement_reason"] == (
        "classification_count"
    )
    # API indices and export labels agree.
    by_id = {c.id: c for c in sandbox.classifications()}
    indices = by_id[int(row["classification_id"])].annotations[0]["value"]
    assert annotation["value"] == [VOCABULARY[i] for i in indices]


def test_a_workflow_export_has_one_row_per_version(client: Panoptes, sandbox: Sandbox) -> None:
    sandbox.set_vocabulary(1, ["painting", "drawing", "map", "photo"])  # a rename: minor only
    export = Workflow(1).get_export("workflows", generate=True)
    rows = list(export.csv_dictreader())
    assert tuple(rows[0].keys()) == WORKFLOW_EXPORT_COLUMNS
    assert [(r["version"], r["minor_version"]) for r in rows] == [("1", "1"), ("1", "2")]
    strings = json.loads(rows[1]["strings"])
    assert strings["T0.answers.3.label"] == "photo"
    assert json.loads(rows[0]["tasks"])["T0"]["answers"][3] == {"label": "T0.answers.3.label"}
    assert json.loads(rows[0]["retirement"]) == {
        "criteria": "classification_count",
        "options": {"count": 3},
    }
    assert rows[0]["prioritized"] == "true"


def test_the_subject_export_has_a_row_per_workflow_and_empty_status_for_unlinked_sets(
    client: Panoptes, sandbox: Sandbox
) -> None:
    _, linked = upload(2, set_name="linked")
    _, unlinked = upload(1, set_name="unlinked", link=False)
    Workflow(1).retire_subjects([linked[0]], reason="consensus")
    rows = list(Project(1).get_export("subjects", generate=True).csv_dictreader())
    assert tuple(rows[0].keys()) == SUBJECT_EXPORT_COLUMNS
    by_subject = {r["subject_id"]: r for r in rows}
    assert by_subject[linked[0].id]["workflow_id"] == "1"
    assert by_subject[linked[0].id]["retirement_reason"] == "consensus"
    assert by_subject[linked[1].id]["classifications_count"] == "0"
    assert json.loads(by_subject[linked[1].id]["locations"]) == {
        "0": "https://images.example.org/linked/1.jpg"
    }
    empty = by_subject[unlinked[0].id]
    assert (empty["workflow_id"], empty["classifications_count"], empty["retired_at"]) == (
        "",
        "",
        "",
    )


def test_an_export_is_served_from_a_plain_file_url_without_auth(
    client: Panoptes, server: SandboxServer
) -> None:
    upload(1)
    media = Project(1).generate_export("classifications")
    assert media["media"][0]["metadata"]["state"] == "creating"
    described = Project(1).describe_export("classifications")["media"][0]
    assert described["metadata"]["state"] == "ready"
    assert described["src"].startswith(server.endpoint + "/media/exports/")
    file = requests.get(described["src"], timeout=5)
    assert file.status_code == 200
    assert file.text.startswith("classification_id,user_name,")


def test_reading_an_export_that_was_never_requested_raises(client: Panoptes) -> None:
    with pytest.raises(PanoptesAPIException, match="No classifications_export"):
        Project(1).describe_export("classifications")


def test_an_export_waits_for_its_delay_before_it_is_ready(
    client: Panoptes, sandbox: Sandbox
) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    sandbox.clock = lambda: now[0]
    sandbox.export_delay_s = 60
    Project(1).generate_export("classifications")
    assert Project(1).describe_export("classifications")["media"][0]["metadata"]["state"] == (
        "creating"
    )
    now[0] += timedelta(seconds=61)
    assert Project(1).describe_export("classifications")["media"][0]["metadata"]["state"] == (
        "ready"
    )


# --------------------------------------------------------------------------- volunteers


def test_the_crowd_is_split_by_profile_and_anonymous_share(sandbox: Sandbox) -> None:
    set_id = sandbox.create_subject_set("s")
    for i in range(4):
        sandbox.create_subject(
            {"image/jpeg": f"https://x/{i}.jpg"},
            subject_set_id=set_id,
            metadata={"#truth": ["map"]},
        )
    sandbox.link_subject_set(1, set_id)
    run = sandbox.run_volunteers(
        crowd=CrowdConfig(
            n_volunteers=20,
            mix={"careful": 0.6, "careless": 0.3, "spammer": 0.1},
            anonymous_share=0.25,
            seed=5,
        )
    )
    profiles = Counter(v.profile for v in run.volunteers)
    assert profiles == {"careful": 12, "careless": 6, "spammer": 2}
    assert sum(v.anonymous for v in run.volunteers) == 5
    anonymous = [c for c in run.classifications if c.user_id is None]
    assert anonymous and all(c.user_name.startswith("not-logged-in-") for c in anonymous)
    assert sum(run.count_by_profile().values()) == len(run.classifications) == 12


def test_volunteers_take_subjects_in_priority_order_and_stop_at_retirement(
    client: Panoptes, sandbox: Sandbox
) -> None:
    _, subjects = upload(4)  # #priority 4, 3, 2, 1: the last uploaded goes first
    by_priority = [int(s.id) for s in reversed(subjects)]
    run = sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=6, seed=9), classifications=6)
    assert len(run.classifications) == 6
    # Replay: each volunteer got the highest-priority subject that was neither retired nor seen.
    counts: Counter[int] = Counter()
    seen: dict[str, set[int]] = {}
    for c in run.classifications:
        mine = seen.setdefault(c.user_name, set())
        expected = next(s for s in by_priority if counts[s] < 3 and s not in mine)
        assert c.subject_ids == [expected]
        counts[expected] += 1
        mine.add(expected)
    assert run.retired_subject_ids == [s for s in by_priority if counts[s] == 3]
    assert run.retired_subject_ids[0] == by_priority[0]

    rest = sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=6, seed=9))
    assert len(rest.classifications) == 12 - 6
    for subject in subjects:
        status = sandbox.status(int(subject.id))
        assert status.classifications_count == 3
        assert status.retirement_reason == "classification_count"
    # Everything is retired: nobody gets anything more.
    assert sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=6, seed=9)).classifications == []


def test_an_unprioritized_workflow_still_gives_each_volunteer_a_subject_once(
    client: Panoptes, sandbox: Sandbox
) -> None:
    sandbox.set_prioritized(1, False)
    sandbox.set_retirement(1, None)  # never_retire: each volunteer sees each subject once
    upload(5)
    run = sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=4, seed=1))
    pairs = [(c.user_name, c.subject_ids[0]) for c in run.classifications]
    assert len(pairs) == len(set(pairs)) == 20
    assert run.retired_subject_ids == []


def test_repeat_classifications_are_flagged_and_do_not_count_towards_retirement(
    client: Panoptes, sandbox: Sandbox
) -> None:
    sandbox.set_retirement(1, 50)
    _, subjects = upload(3)
    run = sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=4, repeat_rate=0.4, seed=11))
    pairs = Counter((c.user_name, c.subject_ids[0]) for c in run.classifications)
    repeats = [
        c for c in run.classifications if c.metadata["subject_selection_state"]["already_seen"]
    ]
    assert repeats and any(n > 1 for n in pairs.values())
    assert all(c.metadata["seen_before"] is True for c in repeats)
    counted = sum(sandbox.status(int(s.id)).classifications_count for s in subjects)
    assert counted == len(run.classifications) - len(repeats) == 12


def test_the_same_seed_gives_the_same_classifications() -> None:
    def simulate() -> list[tuple[str, list[int], list[int]]]:
        sandbox = Sandbox(VOCABULARY, retirement_count=5)
        set_id = sandbox.create_subject_set("s")
        for i in range(6):
            sandbox.create_subject(
                {"image/png": f"https://x/{i}.png"},
                subject_set_id=set_id,
                metadata={"#truth": [VOCABULARY[i % 4]], "#priority": i},
            )
        sandbox.link_subject_set(1, set_id)
        run = sandbox.run_volunteers(
            crowd=CrowdConfig(n_volunteers=8, repeat_rate=0.1, gold_share=0.3, seed=42)
        )
        return [
            (c.user_name, c.subject_ids, c.annotations[0]["value"]) for c in run.classifications
        ]

    assert simulate() == simulate()


def test_careful_volunteers_agree_with_the_truth_and_spammers_do_not(sandbox: Sandbox) -> None:
    sandbox.set_retirement(1, None)
    set_id = sandbox.create_subject_set("s")
    for i in range(40):
        sandbox.create_subject(
            {"image/jpeg": f"https://x/{i}.jpg"},
            subject_set_id=set_id,
            metadata={"#truth": [VOCABULARY[i % 4]]},
        )
    sandbox.link_subject_set(1, set_id)
    run = sandbox.run_volunteers(
        crowd=CrowdConfig(
            n_volunteers=10, mix={"careful": 0.5, "spammer": 0.5}, anonymous_share=0, seed=3
        )
    )
    exact: dict[str, list[bool]] = {"careful": [], "spammer": []}
    for c in run.classifications:
        truth_index = (int(c.subject_ids[0]) - 100001) % 4
        exact[c.profile].append(c.annotations[0]["value"] == [truth_index])
    careful = sum(exact["careful"]) / len(exact["careful"])
    spammer = sum(exact["spammer"]) / len(exact["spammer"])
    assert careful > 0.8 > 0.2 > spammer


def test_truth_can_come_from_a_callable(sandbox: Sandbox) -> None:
    set_id = sandbox.create_subject_set("s")
    sandbox.create_subject({"image/jpeg": "https://x/1.jpg"}, subject_set_id=set_id)
    sandbox.link_subject_set(1, set_id)
    run = sandbox.run_volunteers(
        crowd=CrowdConfig(n_volunteers=3, mix={"expert": 1}, seed=0),
        truth=lambda subject_id, metadata: ["drawing", "photo"],
    )
    assert [c.annotations[0]["value"] for c in run.classifications] == [[1, 3]] * 3


def test_volunteers_can_be_run_over_the_admin_route(
    client: Panoptes, sandbox: Sandbox, server: SandboxServer
) -> None:
    upload(2)
    response = requests.post(
        server.endpoint + "/_sandbox/volunteers",
        timeout=5,
        json={
            "workflow_id": 1,
            "classifications": 4,
            "crowd": {"n_volunteers": 3, "seed": 1},
        },
    )
    assert response.status_code == 200
    assert response.json()["classifications"] == 4
    assert len(sandbox.classifications()) == 4


# --------------------------------------------------------------------------- faults


def test_500_500_on_page_three_breaks_the_plain_iterator_but_not_a_retried_get(
    client: Panoptes, sandbox: Sandbox, no_sleeping: list[float]
) -> None:
    upload(4)
    sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=3, seed=1))  # 12 classifications
    sandbox.faults.fail(r"/classifications/project$", 500, 500, skip=2)

    walked = []
    with pytest.raises(PanoptesAPIException, match="Received HTTP status code 500"):
        # The client fetches next pages with retry=False, so page 3's first 500 ends the walk.
        for c in Classification.where(scope="project", project_id=1, last_id=0, page_size=4):
            walked.append(c.id)
    assert len(walked) == 8

    # Page 3 again: the second 500 is still queued; a retried GET outlives it.
    response, _ = client.get(
        "/classifications/project",
        retry=True,
        params={"project_id": 1, "last_id": walked[-1], "page_size": 4},
    )
    assert len(response["classifications"]) == 4
    assert [e.status for e in sandbox.request_log if "classifications" in e.path] == [
        200,
        200,
        500,
        500,
        200,
    ]
    assert len(no_sleeping) == 1  # one backoff between the two attempts of the retried GET


def test_a_429_carries_retry_after_and_the_client_does_not_retry_it(
    client: Panoptes, sandbox: Sandbox, server: SandboxServer
) -> None:
    sandbox.faults.throttle(r"/classifications/project$", retry_after=7, times=2)
    raw = api(server, "GET", "/classifications/project", params={"project_id": 1})
    assert raw.status_code == 429
    assert raw.headers["Retry-After"] == "7"
    with pytest.raises(PanoptesAPIException, match="429"):
        client.get("/classifications/project", params={"project_id": 1}, retry=True)
    assert (
        api(server, "GET", "/classifications/project", params={"project_id": 1}).status_code == 200
    )


def test_a_hang_outlasts_the_read_timeout_then_the_route_answers_again(
    sandbox: Sandbox, server: SandboxServer
) -> None:
    sandbox.faults.hang(r"/projects/1$", seconds=3)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(server.endpoint + "/api/projects/1", headers=JSONAPI, timeout=0.3)
    assert time.monotonic() - started < 2
    assert api(server, "GET", "/projects/1").status_code == 200


def test_an_empty_page_fault_ends_the_walk_early(client: Panoptes, sandbox: Sandbox) -> None:
    upload(3)
    sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=3, seed=1))  # 9 classifications
    sandbox.faults.empty_page(r"/classifications/project$", skip=1)
    walked = list(Classification.where(scope="project", project_id=1, last_id=0, page_size=4))
    assert len(walked) == 4
    # The cursor is intact: resuming from the last id gets the rest.
    rest = list(
        Classification.where(scope="project", project_id=1, last_id=walked[-1].id, page_size=4)
    )
    assert len(rest) == 5


def test_a_repeated_id_fault_serves_the_previous_pages_last_classification_again(
    client: Panoptes, sandbox: Sandbox
) -> None:
    upload(3)
    sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=3, seed=1))
    sandbox.faults.repeat_id(r"/classifications/project$", skip=1)
    ids = [
        c.id for c in Classification.where(scope="project", project_id=1, last_id=0, page_size=4)
    ]
    assert len(ids) == 10 and len(set(ids)) == 9
    assert ids[3] == ids[4]


def test_an_export_stuck_in_creating_never_becomes_ready(
    client: Panoptes, sandbox: Sandbox
) -> None:
    sandbox.faults.export_stuck("classifications")
    Project(1).generate_export("classifications")
    with pytest.raises(PanoptesAPIException, match="not ready within"):
        Project(1).wait_export("classifications", timeout=0.3)
    assert sandbox.describe_export("classifications").state == "creating"
    # A fresh request without the fault goes through.
    Project(1).generate_export("classifications")
    assert Project(1).describe_export("classifications")["media"][0]["metadata"]["state"] == (
        "ready"
    )


def test_a_stale_export_stays_ready_with_an_updated_at_older_than_the_request(
    client: Panoptes, sandbox: Sandbox
) -> None:
    upload(2)
    first = Project(1).get_export("classifications", generate=True).text
    first_media = Project(1).describe_export("classifications")["media"][0]
    sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=3, seed=1))

    time.sleep(0.01)
    requested_at = datetime.now(UTC)
    sandbox.faults.export_stale("classifications")
    Project(1).generate_export("classifications")
    media = Project(1).describe_export("classifications")["media"][0]
    assert media["metadata"]["state"] == "ready"
    assert datetime.fromisoformat(media["updated_at"].replace("Z", "+00:00")) < requested_at
    assert media["updated_at"] == first_media["updated_at"]
    assert requests.get(media["src"], timeout=5).text == first


def test_a_stale_export_without_an_earlier_one_is_a_day_old_and_empty(
    client: Panoptes, sandbox: Sandbox
) -> None:
    upload(1)
    sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=2, seed=1))
    sandbox.faults.export_stale("classifications")
    media = Project(1).generate_export("classifications")["media"][0]
    age = datetime.now(UTC) - datetime.fromisoformat(media["updated_at"].replace("Z", "+00:00"))
    assert age > timedelta(hours=23)
    text = requests.get(media["src"], timeout=5).text
    assert text.splitlines() == [",".join(CLASSIFICATION_EXPORT_COLUMNS)]


def test_a_download_cut_mid_body_raises_while_reading(client: Panoptes, sandbox: Sandbox) -> None:
    upload(5)
    sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=4, seed=1))
    sandbox.faults.cut_download(fraction=0.6)
    export = Project(1).get_export("classifications", generate=True)
    declared = int(export.headers["Content-Length"])
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        list(export.csv_reader())
    full = requests.get(Project(1).describe_export("classifications")["media"][0]["src"], timeout=5)
    assert len(full.content) == declared


def test_a_failure_after_commit_makes_subject_save_create_a_duplicate(
    client: Panoptes, sandbox: Sandbox, no_sleeping: list[float]
) -> None:
    sandbox.faults.fail_after_commit(r"/api/subjects$", 502, method="POST")
    subject = Subject()
    subject.links.project = Project(1)
    subject.add_location({"image/jpeg": "https://images.example.org/dup.jpg"})
    subject.metadata["external_id"] = "dup-1"
    subject.save()  # redo re-sends the POST after the 502
    assert len(sandbox.find_subjects(external_id="dup-1")) == 2
    assert no_sleeping  # the redo retry slept (a no-op here)


def test_a_reset_closes_the_connection_without_a_response(
    sandbox: Sandbox, server: SandboxServer
) -> None:
    sandbox.faults.reset(r"/projects/1$")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.endpoint + "/api/projects/1", headers=JSONAPI, timeout=5)
    assert api(server, "GET", "/projects/1").status_code == 200


def test_faults_match_by_method_and_query_parameters(
    sandbox: Sandbox, server: SandboxServer
) -> None:
    sandbox.faults.add(
        FaultRule(
            path=r"/subjects$",
            method="GET",
            params={"page": "2"},
            actions=[FaultAction("status", status=503)],
        )
    )
    assert api(server, "GET", "/subjects", params={"page": 1}).status_code == 200
    assert api(server, "GET", "/subjects", params={"page": 2}).status_code == 503
    assert api(server, "GET", "/subjects", params={"page": 2}).status_code == 200
    assert sandbox.faults.rules() == []


def test_faults_can_be_scripted_over_the_admin_route(
    sandbox: Sandbox, server: SandboxServer
) -> None:
    admin = server.endpoint + "/_sandbox/faults"
    created = requests.post(
        admin,
        timeout=5,
        json={
            "path": "/workflows/1$",
            "method": "GET",
            "actions": [{"kind": "status", "status": 500}, "ok", 504],
        },
    )
    assert created.status_code == 201
    statuses = [api(server, "GET", "/workflows/1").status_code for _ in range(4)]
    assert statuses == [500, 200, 504, 200]

    requests.post(admin, timeout=5, json={"path": "/workflows/1$", "actions": [500]})
    assert len(requests.get(admin, timeout=5).json()["faults"]) == 1
    assert requests.delete(admin, timeout=5).status_code == 204
    assert api(server, "GET", "/workflows/1").status_code == 200
    bad = requests.post(admin, timeout=5, json={"path": "x", "actions": ["explode"]})
    assert bad.status_code == 422


# --------------------------------------------------------------------------- lifecycle


def test_state_persists_to_a_json_file_and_reloads(tmp_path) -> None:
    path = tmp_path / "sandbox.json"
    first = Sandbox(VOCABULARY, state_path=path)
    set_id = first.create_subject_set("s")
    subject_id = first.create_subject(
        {"image/jpeg": "https://x/1.jpg"}, subject_set_id=set_id, metadata={"external_id": "e-1"}
    )
    first.link_subject_set(1, set_id)
    first.run_volunteers(crowd=CrowdConfig(n_volunteers=2, seed=1))

    again = Sandbox(VOCABULARY, state_path=path)
    assert again.find_subjects(external_id="e-1")[0].id == subject_id
    assert len(again.classifications()) == 2
    assert again.create_subject({"image/jpeg": "https://x/2.jpg"}) == subject_id + 1
    # An edited vocabulary on restart becomes a new workflow version.
    edited = Sandbox([*VOCABULARY, "map2"], state_path=path)
    assert edited.workflow().version_string == "2.2"


def test_serve_binds_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        serve("0.0.0.0", 0, vocabulary=VOCABULARY)


def test_the_api_can_be_driven_without_sockets(sandbox: Sandbox) -> None:
    from annotate.zooniverse.sandbox import Request

    response = sandbox.handle(Request("GET", "/api/projects/1", {}, {"accept": JSONAPI["Accept"]}))
    assert response.status == 200
    assert json.loads(response.body)["projects"][0]["id"] == "1"


# --------------------------------------------------------------------------- management command


@pytest.mark.django_db
def test_the_command_serves_the_database_vocabulary_and_prints_the_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.core.management import call_command

    from annotate.management.commands import zooniverse_sandbox as command
    from annotate.models import Concept

    Concept.objects.create(key="map", label="map", position=2)
    Concept.objects.create(key="painting", label="painting", position=1)
    Concept.objects.create(key="retired", label="retired", position=3, active=False)
    seen: dict[str, object] = {}

    def stop_at_once(server: SandboxServer, thread: object) -> None:
        Panoptes.connect(endpoint=server.endpoint, client_id="demo", client_secret="demo")
        try:
            seen["strings"] = Workflow.find(1).strings
        finally:
            Panoptes._local.panoptes_client = None

    monkeypatch.setattr(command, "wait_until_interrupted", stop_at_once)
    out = io.StringIO()
    call_command("zooniverse_sandbox", "--port", "0", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("PANOPTES_ENDPOINT=http://127.0.0.1:")
    assert lines[1:3] == ["PANOPTES_PROJECT_ID=1", "PANOPTES_WORKFLOW_ID=1"]
    strings = seen["strings"]
    assert isinstance(strings, dict)
    assert [strings["T0.answers.0.label"], strings["T0.answers.1.label"]] == ["painting", "map"]
    assert "T0.answers.2.label" not in strings


@pytest.mark.django_db
def test_the_command_falls_back_to_the_shipped_vocabulary_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from annotate.management.commands import zooniverse_sandbox as command

    vocabulary = tmp_path / "vocabulary.json"
    vocabulary.write_text(
        json.dumps(
            [
                {
                    "key": "building",
                    "label": "building",
                    "uri": "http://data.europeana.eu/concept/base/29",
                },
                {
                    "key": "ceramics",
                    "label": "ceramics",
                    "uri": "http://data.europeana.eu/concept/base/31",
                },
            ]
        )
    )
    monkeypatch.setattr(command, "DEFAULT_VOCABULARY_FILE", vocabulary)
    assert command.vocabulary_load() == (["building", "ceramics"], ["building", "ceramics"])

    monkeypatch.setattr(command, "DEFAULT_VOCABULARY_FILE", tmp_path / "missing.json")
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="No active concepts"):
        command.vocabulary_load()


def test_export_csv_is_parseable_by_the_csv_module(sandbox: Sandbox) -> None:
    set_id = sandbox.create_subject_set("s")
    sandbox.create_subject(
        {"image/jpeg": "https://x/1.jpg"},
        subject_set_id=set_id,
        metadata={"note": 'a "quoted", comma\nand newline'},
    )
    sandbox.link_subject_set(1, set_id)
    sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=3, seed=0))
    rows = list(csv.DictReader(io.StringIO(sandbox.export_csv("classifications"))))
    assert len(rows) == 3
    assert json.loads(rows[0]["subject_data"])[rows[0]["subject_ids"]]["note"].endswith("newline")


def test_a_local_file_location_gets_a_signed_url_that_takes_the_bytes(
    client: Panoptes, tmp_path
) -> None:
    from PIL import Image

    path = tmp_path / "tiny.png"
    Image.new("RGB", (4, 4), "red").save(path)
    subject = Subject()
    subject.links.project = Project(1)
    subject.add_location(str(path))
    subject.save()  # POSTs "locations": ["image/png"], then PUTs the bytes to the signed URL
    (location,) = subject.locations
    url = location["image/png"]
    assert url.startswith(client.endpoint + "/media/uploads/")
    assert requests.get(url, timeout=5).content == path.read_bytes()


def test_a_subject_deleted_upstream_is_404_and_its_votes_stay(
    client: Panoptes, sandbox: Sandbox, server: SandboxServer
) -> None:
    subject_set, subjects = upload(2)
    sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=3, seed=1))
    doomed = Subject.find(subjects[0].id)
    doomed.delete()  # DELETE with If-Match, as the client sends it
    assert api(server, "GET", f"/subjects/{subjects[0].id}").status_code == 404
    with pytest.raises(PanoptesAPIException, match="Could not find subject"):
        Subject.find(subjects[0].id)
    assert [m.subject_id for m in sandbox.set_members(int(subject_set.id))] == [int(subjects[1].id)]
    assert sum(c.subject_ids == [int(subjects[0].id)] for c in sandbox.classifications()) == 3
    rows = list(csv.DictReader(io.StringIO(sandbox.export_csv("classifications"))))
    assert len(rows) == 6
    missing = api(server, "DELETE", f"/subjects/{subjects[1].id}")
    assert missing.status_code == 428


def test_a_sign_in_without_the_issued_csrf_token_is_refused(server: SandboxServer) -> None:
    response = requests.post(
        server.endpoint + "/users/sign_in",
        json={"authenticity_token": "forged", "user": {"login": "u", "password": "p"}},
        headers={"Accept": "application/json"},
        timeout=5,
    )
    assert response.status_code == 422
    assert "CSRF" in response.json()["error"]


def test_admin_mode_adds_a_query_parameter_the_sandbox_ignores(
    server: SandboxServer, sandbox: Sandbox
) -> None:
    Panoptes.connect(endpoint=server.endpoint, client_id="id", client_secret="s", admin=True)
    try:
        subject_set, _ = upload(25)
        listed = list(Subject.where(subject_set_id=subject_set.id))
        assert len(listed) == 25
        pages = [e for e in sandbox.request_log if e.path == "/api/subjects" and e.method == "GET"]
        assert len(pages) == 2 and all(e.query.get("admin") == "True" for e in pages)
    finally:
        Panoptes._local.panoptes_client = None


@pytest.mark.parametrize("task_type", ["single", "survey"])
def test_a_single_answer_or_survey_workflow_exports_its_values_in_the_real_shapes(task_type):
    sandbox = Sandbox(["Zebra", "Baboon"], task_type=task_type)
    set_id = sandbox.create_subject_set("s")
    sandbox.create_subject(
        {"image/jpeg": "https://example.org/1.jpg"}, metadata={"#truth": ["Zebra"]},
        subject_set_id=set_id,
    )  # fmt: skip
    sandbox.link_subject_set(sandbox.workflow_id, set_id)
    sandbox.run_volunteers(crowd=CrowdConfig(n_volunteers=5, seed=1), classifications=5)
    rows = list(csv.DictReader(io.StringIO(sandbox.export_csv("classifications"))))
    assert len(rows) == 5
    annotations = [json.loads(row["annotations"])[0] for row in rows]
    if task_type == "single":
        assert sandbox.workflow().tasks["T0"]["type"] == "single"
        assert all(a["value"] in ("Zebra", "Baboon") and "task_label" in a for a in annotations)
    else:
        assert sandbox.labels() == ["Zebra", "Baboon"]
        assert sandbox.workflow().tasks["T0"]["choicesOrder"] == ["ZEBRA", "BABOON"]
        for a in annotations:
            assert "task_label" not in a
            assert all(set(v) == {"choice", "answers", "filters"} for v in a["value"])
