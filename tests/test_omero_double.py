"""The OMERO double itself, through the real omero-py over Ice: sessions,
permissions, loud failures, faults, restarts and request counts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

import ezomero
import Glacier2
import Ice
import omero
import omero.clients  # noqa: F401  (omero.client)
import omero.gateway
import omero.sys
from omero.rtypes import rstring

from tests.omero_double.fixture import REPO_ROOT, OmeroDouble, free_port

ALL_GROUPS = {"omero.group": "-1"}


def client(double: OmeroDouble) -> Any:
    return omero.client("127.0.0.1", double.port)


@pytest.fixture
def clients(omero_double: OmeroDouble) -> Iterator[list[Any]]:
    """Clients a test opens; closed afterwards."""
    opened: list[Any] = []
    yield opened
    for c in opened:
        c.__del__()


def login(double: OmeroDouble, opened: list[Any], user: str = "root",
          password: str = "omero") -> Any:
    c = client(double)
    opened.append(c)
    c.createSession(user, password)
    return c


def sudo(double: OmeroDouble, opened: list[Any], user: str, group: str,
         ttl_ms: int = 600_000) -> tuple[str, Any]:
    """As BlitzServer does: root opens a session for ``user``, which is then joined."""
    admin = login(double, opened)
    principal = omero.sys.Principal()
    principal.name, principal.group, principal.eventType = user, group, "User"
    key = admin.sf.getSessionService().createSessionWithTimeout(principal, ttl_ms).uuid.val
    joined = client(double)
    opened.append(joined)
    joined.joinSession(key)
    return key, joined


def test_a_sudo_session_outlives_its_joined_client_until_closed_for_good(
        omero_double: OmeroDouble, clients: list[Any]) -> None:
    """It starts with a reference of its own (SessionManagerImpl.createSession): a
    client that joined and closed softly leaves it open; killSession ends it."""
    key, joined = sudo(omero_double, clients, "researcher", "Demo")
    joined.closeSession()
    again = client(omero_double)
    clients.append(again)
    again.joinSession(key)  # still there
    assert again.killSession() >= 1
    with pytest.raises(Glacier2.PermissionDeniedException):
        client(omero_double).joinSession(key)


def test_only_an_admin_with_sudo_or_a_group_leader_opens_sudo_sessions(
        omero_double: OmeroDouble, clients: list[Any]) -> None:
    other = login(omero_double, clients, "other")
    principal = omero.sys.Principal()
    principal.name, principal.group, principal.eventType = "other", "Demo", "User"
    with pytest.raises(omero.SecurityViolation, match="Group sudo is not permitted"):
        other.sf.getSessionService().createSessionWithTimeout(principal, 60_000)  # not for itself


def test_login_event_context_and_wrong_password(omero_double: OmeroDouble,
                                                clients: list[Any]) -> None:
    root = login(omero_double, clients)
    ec = root.sf.getAdminService().getEventContext()
    assert (ec.userName, ec.isAdmin, ec.groupName) == ("root", True, "system")
    assert "Sudo" in ec.adminPrivileges
    with pytest.raises(Glacier2.PermissionDeniedException):
        client(omero_double).createSession("root", "wrong")
    researcher = login(omero_double, clients, "researcher")
    ec = researcher.sf.getAdminService().getEventContext()
    assert (ec.userName, ec.isAdmin, ec.groupName) == ("researcher", False, "Demo")


def test_a_session_ttl_is_not_extended_by_keepalive(omero_double: OmeroDouble,
                                                   clients: list[Any]) -> None:
    key, joined = sudo(omero_double, clients, "researcher", "Demo", ttl_ms=60_000)
    omero_double.advance(40)
    admin = joined.sf.getAdminService()
    assert joined.sf.keepAlive(admin) is True
    assert joined.sf.keepAlive(None) is False  # ServiceFactoryI.keepAlive: null → false
    assert admin.getEventContext().userName == "researcher"
    omero_double.advance(40)  # 80 s after the start: past the time-to-live despite the activity
    with pytest.raises(omero.SessionTimeoutException):
        joined.sf.getAdminService().getEventContext()
    with pytest.raises(Ice.ObjectNotExistException):  # then the servants are gone
        joined.sf.keepAlive(None)
    with pytest.raises(Glacier2.PermissionDeniedException):
        client(omero_double).joinSession(key)


def test_a_login_session_lives_while_used(omero_double: OmeroDouble,
                                          clients: list[Any]) -> None:
    root = login(omero_double, clients)
    for _ in range(3):  # 1500 s in all, never 600 s idle
        omero_double.advance(500)
        assert root.sf.keepAlive(root.sf.getAdminService())
    omero_double.advance(601)
    with pytest.raises(omero.SessionTimeoutException):
        root.sf.keepAlive(None)


def test_objects_of_other_groups_are_invisible(omero_double: OmeroDouble,
                                               clients: list[Any]) -> None:
    _, researcher = sudo(omero_double, clients, "researcher", "Demo")
    conn = omero.gateway.BlitzGateway(client_obj=researcher)
    assert conn.getObject("Dataset", 151).getName() == "dataset 151"
    assert conn.getObject("Dataset", 152) is None  # Lab2's
    params = omero.sys.ParametersI()
    params.addId(152)
    query = "select o.details.group.name from Dataset o where o.id = :id"
    assert conn.getQueryService().projection(query, params, ALL_GROUPS) == []
    _, alice = sudo(omero_double, clients, "alice", "Lab2")
    alice_conn = omero.gateway.BlitzGateway(client_obj=alice)
    assert alice_conn.getObject("Dataset", 151) is None
    admin = omero.gateway.BlitzGateway(client_obj=login(omero_double, clients))
    assert admin.getObject("Dataset", 151) is None  # root's session is in "system"
    params = omero.sys.ParametersI()
    params.addId(151)
    (row,) = admin.getQueryService().projection(query, params, ALL_GROUPS)
    assert row[0].val == "Demo"


def test_can_link_follows_group_permissions_and_ownership(omero_double: OmeroDouble,
                                                          clients: list[Any]) -> None:
    omero_double.world({"groups": [{"name": "Shared", "perms": "rwrw--"}],
                        "users": [{"name": "bob", "groups": ["Shared", "Demo"]},
                                  {"name": "pi", "groups": ["Demo"], "leader_of": ["Demo"]}],
                        "datasets": [{"id": 160, "name": "shared", "group": "Shared",
                                      "owner": "bob"}]})
    seen = {}
    for user, group, dataset in (("researcher", "Demo", 151), ("other", "Demo", 151),
                                 ("pi", "Demo", 151), ("bob", "Shared", 160)):
        _, c = sudo(omero_double, clients, user, group)
        found = omero.gateway.BlitzGateway(client_obj=c).getObject("Dataset", dataset)
        seen[user] = (found.canLink(), found.canAnnotate())
    assert seen == {"researcher": (True, True), "other": (False, True), "pi": (True, True),
                    "bob": (True, True)}
    _, other = sudo(omero_double, clients, "other", "Demo")
    link = omero.model.DatasetImageLinkI()
    link.parent = omero.model.DatasetI(151, False)
    link.child = omero.model.ImageI(1, False)
    with pytest.raises(omero.SecurityViolation, match="may not link"):
        other.sf.getUpdateService().saveObject(link)


def test_sudo_needs_the_sudo_privilege(omero_double: OmeroDouble, clients: list[Any]) -> None:
    omero_double.world({"users": [
        {"name": "helper", "admin": "restricted", "privileges": ["WriteOwned"]},
        {"name": "gone", "groups": ["Demo"], "active": False}]})
    helper = login(omero_double, clients, "helper")
    assert helper.sf.getAdminService().getEventContext().isAdmin
    principal = omero.sys.Principal()
    principal.name, principal.group, principal.eventType = "researcher", "Demo", "User"
    with pytest.raises(omero.SecurityViolation, match="Group sudo is not permitted"):
        helper.sf.getSessionService().createSessionWithTimeout(principal, 60_000)
    with pytest.raises(Glacier2.PermissionDeniedException):
        client(omero_double).createSession("gone", "omero")
    root = login(omero_double, clients)
    principal.name = "gone"
    with pytest.raises(omero.SecurityViolation, match="inactive"):
        root.sf.getSessionService().createSessionWithTimeout(principal, 60_000)


def test_unknown_calls_and_queries_fail_loudly(omero_double: OmeroDouble,
                                               clients: list[Any]) -> None:
    root = login(omero_double, clients)
    with pytest.raises(omero.ApiUsageException, match="does not understand the query"):
        root.sf.getQueryService().findAllByQuery("select p from Project p", None)
    with pytest.raises(Ice.OperationNotExistException, match="IAdmin.lookupLdapAuthExperimenters"):
        root.sf.getAdminService().lookupLdapAuthExperimenters()
    with pytest.raises(Ice.OperationNotExistException, match="getScriptService"):
        root.sf.getScriptService()


def test_injected_faults(omero_double: OmeroDouble, clients: list[Any]) -> None:
    root = login(omero_double, clients)
    admin = root.sf.getAdminService()
    omero_double.fault("IAdmin.getEventContext", "omero.SecurityViolation",
                       message="injected", times=2)
    for _ in range(2):
        with pytest.raises(omero.SecurityViolation, match="injected"):
            admin.getEventContext()
    assert admin.getEventContext().userName == "root"
    omero_double.fault("IAdmin.lookupGroup", stall_seconds=1.0)
    started = time.monotonic()
    assert admin.lookupGroup("Demo").name.val == "Demo"
    assert time.monotonic() - started >= 1.0
    omero_double.fault("createSession", "Ice.ConnectionLostException")
    with pytest.raises(Ice.UnknownLocalException):
        client(omero_double).createSession("root", "omero")
    omero_double.fault("createSession", "omero.WrappedCreateSessionException", message="no")
    with pytest.raises(omero.WrappedCreateSessionException) as refused:
        client(omero_double).createSession("root", "omero")
    assert (refused.value.reason, refused.value.concurrency) == ("no", False)


def test_refused_connections(omero_double: OmeroDouble, clients: list[Any]) -> None:
    root = login(omero_double, clients)
    omero_double.refuse(3)
    with pytest.raises(Ice.ConnectionRefusedException):
        client(omero_double).createSession("root", "omero")
    deadline = time.monotonic() + 30
    while True:  # listening again after the pause; the old Glacier2 session is gone
        try:
            login(omero_double, clients)
            break
        except Ice.ConnectionRefusedException:
            assert time.monotonic() < deadline, "the double did not listen again"
            time.sleep(0.2)
    with pytest.raises((Ice.ObjectNotExistException, Ice.ConnectionLostException)):
        root.sf.getAdminService().getEventContext()


def test_a_restart_keeps_the_state(omero_double: OmeroDouble, clients: list[Any]) -> None:
    key, joined = sudo(omero_double, clients, "researcher", "Demo")
    dataset = omero.model.DatasetI()
    dataset.name = rstring("made before the restart")
    created = joined.sf.getUpdateService().saveAndReturnObject(dataset).id.val
    omero_double.restart()
    with pytest.raises((Ice.ObjectNotExistException, Ice.ConnectionLostException)):
        joined.sf.getAdminService().getEventContext()
    again = client(omero_double)
    clients.append(again)
    again.joinSession(key)  # the session itself survives, as the server's do
    conn = omero.gateway.BlitzGateway(client_obj=again)
    assert conn.getObject("Dataset", created).getName() == "made before the restart"
    assert omero_double.state()["datasets"][str(created)]["owner"] == 2


def test_requests_are_counted_per_session(omero_double: OmeroDouble,
                                          clients: list[Any]) -> None:
    key, joined = sudo(omero_double, clients, "researcher", "Demo")
    before = omero_double.requests(key)
    for _ in range(5):
        joined.sf.keepAlive(None)
    assert omero_double.requests(key) == before + 5
    assert omero_double.requests() > omero_double.requests(key)


def test_datasets_by_name_new_datasets_and_e_mail(omero_double: OmeroDouble,
                                                  clients: list[Any]) -> None:
    """What the watch-folder (#15) and notification (#16) work ask of OMERO."""
    admin = omero.gateway.BlitzGateway(client_obj=login(omero_double, clients))
    _, joined = sudo(omero_double, clients, "researcher", "Demo")
    conn = omero.gateway.BlitzGateway(client_obj=joined)
    assert [d.id for d in conn.getObjects("Dataset", attributes={"name": "dataset 151"})] == [151]
    assert list(conn.getObjects("Dataset", attributes={"name": "dataset 152"})) == []  # Lab2's
    new = ezomero.post_dataset(conn, "watched", description="made for a folder")
    assert [d.id for d in conn.getObjects("Dataset", attributes={"name": "watched"})] == [new]
    made = omero_double.state()["datasets"][str(new)]
    assert (made["owner"], made["group"], made["description"]) == (2, 3, "made for a folder")
    assert admin.getObject("Experimenter", 4).getEmail() == "alice@example.org"
    assert ezomero.get_user_id(admin, "researcher") == 2
    assert conn.getUser().getEmail() == "researcher@example.org"
    omero_double.world({"users": [{"name": "quiet", "groups": ["Demo"], "email": None}]})
    assert admin.getAdminService().lookupExperimenter("quiet").email is None


def test_a_closed_connection_ends_a_session_unless_detached(omero_double: OmeroDouble) -> None:
    plain, detached = client(omero_double), client(omero_double)
    plain.createSession("researcher", "omero")
    detached.createSession("researcher", "omero")
    detached.sf.detachOnDestroy()
    keys = plain.getSessionId(), detached.getSessionId()
    for c in (plain, detached):
        c.getCommunicator().destroy()  # the connection goes, no destroySession
    deadline = time.monotonic() + 30
    while not omero_double.state()["sessions"][keys[0]]["closed"]:
        assert time.monotonic() < deadline, "the session of a closed connection stayed open"
        time.sleep(0.1)
    assert not omero_double.state()["sessions"][keys[1]]["closed"]


def test_the_server_half_of_an_import(omero_double: OmeroDouble, clients: list[Any],
                                      tmp_path: Any) -> None:
    original = tmp_path / "acq 10:30" / "a.tif"
    original.parent.mkdir()
    original.write_bytes(b"pixels")
    key, _ = sudo(omero_double, clients, "other", "Demo", ttl_ms=60_000)
    body = {"session": key, "target": {"type": "Dataset", "id": 151}, "kind": "image",
            "images": 1, "name": "a.tif",
            "files": [{"path": str(original), "client_path": str(original)[1:].replace(":", ";")}]}
    with pytest.raises(RuntimeError, match="403.*omero.SecurityViolation.*may not link"):
        omero_double.import_fileset(body)  # other's session, researcher's Dataset
    key, _ = sudo(omero_double, clients, "researcher", "Demo", ttl_ms=60_000)
    omero_double.fault("import", "omero.InternalException", message="disk full")
    with pytest.raises(RuntimeError, match="omero.InternalException.*disk full"):
        omero_double.import_fileset({**body, "session": key})
    made = omero_double.import_fileset({**body, "session": key})
    fileset = omero_double.state()["filesets"][str(made["fileset"])]
    assert [e["client_path"] for e in fileset["entries"]] == [str(original)[1:].replace(":", ";")]
    assert (fileset["owner"], fileset["group"], fileset["images"]) == (2, 3, made["images"])
    link = omero_double.state_dir / "ManagedRepository" / made["template_prefix"] / "a.tif"
    assert link.is_symlink() and link.resolve() == original
    assert omero_double.state()["datasets"]["151"]["children"] == made["images"]
    with pytest.raises(RuntimeError, match="500.*omero.grid.ImportFailed.*bad pixels"):
        omero_double.import_fileset({**body, "session": key, "fail": "bad pixels"})
    failed = max(omero_double.state()["filesets"].values(), key=lambda f: f["id"])
    assert failed["id"] > made["fileset"] and failed["entries"]  # kept, without images
    assert not any(i["fileset"] == failed["id"] for i in omero_double.state()["images"].values())
    omero_double.advance(61)
    with pytest.raises(RuntimeError, match="403.*omero.SessionTimeoutException"):
        omero_double.import_fileset({**body, "session": key})


def test_the_server_half_in_the_importers_steps(omero_double: OmeroDouble, clients: list[Any],
                                                tmp_path: Any) -> None:
    originals = [tmp_path / "run" / name for name in ("a.tif", "b.tif")]
    originals[0].parent.mkdir()
    for original in originals:
        original.write_bytes(b"pixels")
    key, _ = sudo(omero_double, clients, "researcher", "Demo", ttl_ms=60_000)
    files = [{"path": str(o), "client_path": str(o)[1:]} for o in originals]
    made = omero_double.import_step("fileset", {"session": key, "files": files, "name": "a"})
    fileset = omero_double.state()["filesets"][str(made["fileset"])]
    assert len(fileset["entries"]) == 2 and fileset["images"] == []  # before any transfer
    folder = omero_double.state_dir / "ManagedRepository" / made["template_prefix"]
    assert folder.is_dir() and list(folder.iterdir()) == []
    step = {"session": key, "fileset": made["fileset"]}
    other, _ = sudo(omero_double, clients, "other", "Demo", ttl_ms=60_000)
    with pytest.raises(RuntimeError, match="400.*no import process for Fileset"):
        omero_double.import_step("transfer", {**step, "session": other, "index": 0})
    assert omero_double.import_step("transfer", {**step, "index": 0}) == {"ok": True}
    assert (folder / "a.tif").resolve() == originals[0]
    originals[1].unlink()  # gone since the scan
    with pytest.raises(RuntimeError,
                       match=r"400.*omero.ResourceError.*b.tif \(No such file or directory\)"):
        omero_double.import_step("transfer", {**step, "index": 1})
    assert (folder / "b.tif").is_symlink()  # the link stays
    with pytest.raises(RuntimeError, match="500.*omero.grid.ImportFailed.*cannot read"):
        omero_double.import_step("import", {**step, "target": {"type": "Dataset", "id": 151}})
    assert omero_double.state()["filesets"][str(made["fileset"])]["images"] == []
    single = omero_double.import_step("fileset", {"session": key, "files": files[:1]})
    omero_double.import_step("transfer", {"session": key, "fileset": single["fileset"],
                                          "index": 0})
    done = omero_double.import_step("import", {"session": key, "fileset": single["fileset"],
                                               "target": {"type": "Dataset", "id": 151},
                                               "images": 2})
    assert len(done["images"]) == 2
    assert omero_double.state()["datasets"]["151"]["children"] == done["images"]


def test_standalone_with_a_world_file_and_dump(tmp_path: Any,
                                               omero_double_certificates: Any) -> None:
    world = tmp_path / "world.json"
    world.write_text(json.dumps({"groups": [{"name": "Lab3", "perms": "rw----"}],
                                 "users": [{"name": "carol", "groups": ["Lab3"]}]}))
    state = tmp_path / "state"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.omero_double", "--port", str(port), "--state", str(state),
         "--world", str(world), "--cert-dir", str(omero_double_certificates)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        env = {}
        while "OMERO_DOUBLE_STATE" not in env:  # the last line (more with the importer stand-in)
            line = process.stdout.readline()
            assert line, "the double ended before printing its environment"
            key, _, value = line.strip().partition("=")
            env[key] = value
        assert (env["OMERO_HOST"], env["OMERO_PORT"], env["OMERO_USER"], env["OMERO_PASSWORD"],
                env["OMERO_DOUBLE_STATE"]) == ("127.0.0.1", str(port), "root", "omero", str(state))
        c = omero.client("127.0.0.1", port)
        c.createSession("carol", "omero")
        assert c.sf.getAdminService().getEventContext().groupName == "Lab3"
        c.__del__()
    finally:
        process.terminate()
        process.wait(timeout=30)
    dumped = json.loads(subprocess.run(
        [sys.executable, "-m", "tests.omero_double", "dump", "--state", str(state)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout)
    assert {u["name"]: u["email"] for u in dumped["users"].values()}["carol"] == \
        "carol@example.org"
    assert "password" not in dumped["users"]["0"]
    assert sum(dumped["requests"].values()) >= 2


def test_one_save_call_is_one_transaction(omero_double: OmeroDouble, clients: list[Any]) -> None:
    _, joined = sudo(omero_double, clients, "other", "Demo")
    mine = omero.model.DatasetI()
    mine.name = rstring("mine")
    link = omero.model.ScreenPlateLinkI()  # into researcher's Screen: other may not
    link.parent, link.child = omero.model.ScreenI(451, False), omero.model.PlateI()
    link.child.name = rstring("plate")
    with pytest.raises(omero.SecurityViolation, match="Cannot link to Screen:451"):
        joined.sf.getUpdateService().saveAndReturnArray([mine, link])
    state = omero_double.state()
    assert sorted(d["name"] for d in state["datasets"].values()) == [
        "dataset 151", "dataset 152"] and state["plates"] == {}


def test_writes_across_all_groups_take_the_linked_object_s_group(
        omero_double: OmeroDouble, clients: list[Any]) -> None:
    _, joined = sudo(omero_double, clients, "researcher", "Demo")
    update = joined.sf.getUpdateService()
    link = omero.model.DatasetAnnotationLinkI()
    link.parent, link.child = omero.model.DatasetI(151, False), omero.model.MapAnnotationI()
    saved = update.saveAndReturnObject(link, ALL_GROUPS)
    assert omero_double.state()["annotations"][str(saved.child.id.val)]["group"] == 3
    lonely = omero.model.DatasetI()
    lonely.name = rstring("where?")
    with pytest.raises(omero.SecurityViolation, match="omero.group=-1"):
        update.saveObject(lonely, ALL_GROUPS)
