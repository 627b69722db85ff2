"""The web UI in a real headless Chromium against a real ``podium agent --dev``: what
issue 16 asks of it, each as a person would see it (no reloads: the page follows the
event stream, or polls while it cannot)."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acl.devagent import AclAgent
from tests.e2e.conftest import DevAgent, wait_until, write_job
from tests.ui.conftest import register, sleeper

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
).expect

# one worker runs them all: one Chromium at a time on these 2-core machines
pytestmark = pytest.mark.xdist_group("chromium")

ROLLING = {
    "max_parallel": 1,
    "health_check": "task_states",
    "min_healthy_time": "2s",
    "healthy_deadline": "30s",
    "progress_deadline": "60s",
}


def test_jobs_page_lists_jobs_and_a_new_one_appears_without_reload(
    ui_agent: DevAgent, page: Any, tmp_path: Path
) -> None:
    register(ui_agent.addr, sleeper("alpha"))
    page.goto(ui_agent.addr + "/")  # a browser at the API's root lands on the UI
    expect(page).to_have_url(re.compile(r"/ui/$"))
    expect(page.locator('tr[data-job="alpha"]')).to_be_visible(timeout=10_000)
    expect(page.locator('tr[data-job="alpha"]')).to_contain_text("default")

    # the page follows the event stream (not the fallback poll)
    expect(page.locator("#live")).to_have_text("live", timeout=5_000)
    register(ui_agent.addr, sleeper("beta"))
    registered = time.monotonic()
    expect(page.locator('tr[data-job="beta"]')).to_be_visible(timeout=2_000)
    assert time.monotonic() - registered < 2.0

    # ... and from the CLI, as a person does
    job_file = write_job(tmp_path, json.dumps(sleeper("gamma")), "gamma.json")
    ui_agent.cli("job", "run", "--detach", job_file, check=True)
    registered = time.monotonic()
    expect(page.locator('tr[data-job="gamma"]')).to_be_visible(timeout=2_000)
    assert time.monotonic() - registered < 2.0

    # the search narrows the list as one types; a live update while typing keeps the
    # typed text and the focus
    search = page.get_by_label("Search by name")
    search.click()
    page.keyboard.type("al")
    expect(page.locator('tr[data-job="beta"]')).to_have_count(0)
    assert "q=al" in page.url
    register(ui_agent.addr, sleeper("alpine"))
    expect(page.locator('tr[data-job="alpine"]')).to_be_visible(timeout=2_000)
    assert page.evaluate("document.activeElement.id") == "f-q"
    page.keyboard.type("pi")
    expect(page.locator('tr[data-job="alpha"]')).to_have_count(0)
    expect(page.locator('tr[data-job="alpine"]')).to_be_visible()
    expect(search).to_have_value("alpi")


def test_deployment_progress_changes_as_it_rolls(ui_agent: DevAgent, page: Any) -> None:
    register(ui_agent.addr, sleeper("roll", count=3, update=ROLLING))
    ui_agent.wait_running("roll", 3)
    wait_until(
        lambda: ui_agent.get("/v1/job/roll/deployment")["status"] == "successful",
        timeout=60,
        what="the first deployment to finish",
    )
    page.goto(ui_agent.addr + "/ui/job/roll?namespace=default")
    expect(page.locator("#deployment")).to_contain_text("version 0", timeout=10_000)

    changed = sleeper("roll", count=3, update=ROLLING)
    changed["groups"]["g"]["tasks"]["t"]["config"]["args"] = ["3601"]
    register(ui_agent.addr, changed)
    deployment = page.locator("#deployment")
    expect(page.locator("#live")).to_have_text("live", timeout=5_000)
    expect(deployment).to_contain_text("version 1", timeout=5_000)
    progress = page.locator('.progress-row[data-group="g"] .progress-text')
    expect(progress).to_have_text(re.compile(r"^[0-2] / 3 healthy"), timeout=5_000)
    expect(progress).to_have_text(re.compile(r"^3 / 3 healthy"), timeout=60_000)
    expect(deployment).to_have_attribute("data-status", "successful", timeout=10_000)


def test_alloc_log_tail_shows_a_new_line_within_two_seconds(
    ui_agent: DevAgent, page: Any, tmp_path: Path
) -> None:
    trigger = tmp_path / "say"
    script = (
        f"echo started; while true; do if [ -f {trigger} ]; then cat {trigger}; "
        f"rm -f {trigger}; fi; sleep 0.1; done"
    )
    job = sleeper("talker")
    job["groups"]["g"]["tasks"]["t"]["config"] = {"command": "/bin/sh", "args": ["-c", script]}
    register(ui_agent.addr, job)
    alloc = ui_agent.wait_running("talker", 1)[0]
    page.goto(f"{ui_agent.addr}/ui/allocation/{alloc['id']}?namespace=default")
    expect(page.locator("#view h1")).to_contain_text("Allocation", timeout=10_000)
    tail = page.locator("#log-tail")
    expect(tail).to_contain_text("started", timeout=10_000)
    expect(page.locator("#log-state")).to_have_text("following")

    line = f"hello-{uuid.uuid4().hex}"
    trigger.write_text(line + "\n")
    written = time.monotonic()
    expect(tail).to_contain_text(line, timeout=2_000)
    assert time.monotonic() - written < 2.0

    # paused, the tail holds new lines back; following again shows them
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#log-state")).to_have_text("paused")
    held = f"held-{uuid.uuid4().hex}"
    trigger.write_text(held + "\n")
    page.get_by_role("button", name="Follow").click()
    expect(tail).to_contain_text(held, timeout=5_000)
    # the allocation's tasks and their resource usage, measured by the agent
    # (GET /v1/allocation/{id}/stats): the running task's row with its memory
    expect(page.locator(".task h3")).to_contain_text("t")
    row = page.locator("#usage table tbody tr")
    expect(row).to_have_count(1, timeout=10_000)
    expect(row.locator("td").first).to_have_text("t")
    expect(row).to_contain_text("MiB")


def test_scale_and_stop_from_the_ui(ui_agent: DevAgent, page: Any) -> None:
    register(ui_agent.addr, sleeper("scaler", count=1))
    ui_agent.wait_running("scaler", 1)
    page.goto(ui_agent.addr + "/ui/job/scaler?namespace=default")
    page.get_by_role("button", name="Scale…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("New count").fill("3")
    dialog.get_by_role("button", name="Scale").click()
    expect(dialog).to_be_hidden()

    wait_until(
        lambda: ui_agent.get("/v1/job/scaler")["spec"]["groups"]["g"]["count"] == 3,
        what="the API to report count 3",
    )
    ui_agent.wait_running("scaler", 3)
    expect(page.locator('tr[data-group="g"] .group-count')).to_have_text("3", timeout=5_000)
    expect(page.locator("#allocations tbody tr")).to_have_count(3, timeout=5_000)

    # stop: cancelling changes nothing (by keyboard: Enter opens, Escape closes, and the
    # focus returns to the button); confirming stops the job
    stop = page.get_by_role("button", name="Stop job")
    stop.focus()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(stop).to_be_focused()
    page.get_by_role("button", name="Stop job").click()
    page.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert ui_agent.get("/v1/job/scaler")["stop"] is False
    page.get_by_role("button", name="Stop job").click()
    dialog.get_by_role("button", name="Stop job").click()
    wait_until(lambda: ui_agent.get("/v1/job/scaler")["stop"] is True, what="the job to stop")
    expect(page.get_by_role("button", name="Stop job")).to_have_count(0, timeout=5_000)


def test_pages_render_at_phone_width(ui_agent: DevAgent, browser: Any) -> None:
    register(ui_agent.addr, sleeper("small"))
    ui_agent.wait_running("small", 1)
    context = browser.new_context(viewport={"width": 375, "height": 740})
    try:
        pg = context.new_page()
        for path, ready in [
            ("/ui/jobs", 'tr[data-job="small"]'),
            ("/ui/job/small?namespace=default", "#allocations"),
            ("/ui/nodes", "#nodes-table"),
            ("/ui/topology", ".node-box"),
        ]:
            pg.goto(ui_agent.addr + path)
            expect(pg.locator(ready).first).to_be_visible(timeout=10_000)
            overflow = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path} is {overflow}px wider than a 375px screen"
        # keyboard: the first Tab reaches the skip link, the next ones the navigation
        pg.keyboard.press("Tab")
        assert pg.evaluate("document.activeElement.textContent") == "Skip to content"
    finally:
        context.close()


def test_access_control_login_and_namespace_filtering(acl_agent: AclAgent, page: Any) -> None:
    acl_agent.admin("PUT", "/v1/namespace/team-a", json={})
    register(acl_agent.addr, sleeper("secret-default"), token=acl_agent.management)
    register(acl_agent.addr, sleeper("team-job"), "team-a", token=acl_agent.management)
    team = acl_agent.token("team-a-reader", "namespaces:\n  team-a: {policy: read}\n")

    # no token: a login form, and no data on the page or from the fragments
    page.goto(acl_agent.addr + "/ui/jobs")
    expect(page.get_by_label("ACL token")).to_be_visible(timeout=10_000)
    expect(page.locator("#view")).to_be_hidden()
    assert "secret-default" not in page.content()
    assert "team-job" not in page.content()
    r = httpx.get(f"{acl_agent.addr}/ui/fragment/jobs", params={"namespace": "*"}, timeout=10)
    assert r.status_code == 401

    # a wrong token is refused, with the reason
    page.get_by_label("ACL token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("refused")

    # a token that reads team-a sees team-a's job only
    page.get_by_label("ACL token").fill(team)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator('tr[data-job="team-job"]')).to_be_visible(timeout=10_000)
    expect(page.locator('tr[data-job="secret-default"]')).to_have_count(0)
    # live with a token: the stream carries the header, and only what the token may read
    expect(page.locator("#live")).to_have_text("live", timeout=5_000)
    register(acl_agent.addr, sleeper("team-two"), "team-a", token=acl_agent.management)
    register(acl_agent.addr, sleeper("secret-two"), token=acl_agent.management)
    expect(page.locator('tr[data-job="team-two"]')).to_be_visible(timeout=2_000)
    assert "secret-two" not in page.content()
    assert "secret-default" not in page.content()
    # ... and is refused what it may not read, with the edge's reason
    page.goto(acl_agent.addr + "/ui/job/secret-default?namespace=default")
    expect(page.locator(".error-box")).to_contain_text("read-job", timeout=10_000)

    # logging out forgets the token
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("ACL token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.goto(acl_agent.addr + "/ui/jobs")
    expect(page.get_by_label("ACL token")).to_be_visible(timeout=10_000)


def test_every_page_renders_without_script_errors(ui_agent: DevAgent, page: Any) -> None:
    """The pages the other tests do not visit, with something on each (the ``page``
    fixture fails the test on any JavaScript error)."""
    register(ui_agent.addr, sleeper("everything"))
    ui_agent.wait_running("everything", 1)
    r = httpx.put(f"{ui_agent.addr}/v1/var/app/config", json={"items": {"mode": "blue"}})
    assert r.status_code == 200, r.text
    node = ui_agent.get("/v1/nodes")[0]
    for path, text in [
        (f"/ui/node/{node['id']}", "everything"),
        ("/ui/topology", node["name"]),
        ("/ui/services", "Services"),
        ("/ui/evaluations", "job-register"),
        ("/ui/variables", "app/config"),
    ]:
        page.goto(ui_agent.addr + path)
        expect(page.locator("#view .page")).to_contain_text(text, timeout=10_000)
    # from the list to a variable's values, by keyboard-reachable links
    page.goto(ui_agent.addr + "/ui/variables")
    page.get_by_role("link", name="app/config").click()
    expect(page.locator("#view")).to_contain_text("blue", timeout=10_000)
    # navigation marks the current page for assistive technology
    main_nav = page.get_by_role("navigation", name="Main")
    expect(main_nav.get_by_role("link", name="Variables")).to_have_attribute("aria-current", "page")


def test_a_finished_allocations_log_is_shown_once(ui_agent: DevAgent, page: Any) -> None:
    job = sleeper("once")
    job["type"] = "batch"
    job["groups"]["g"]["tasks"]["t"]["config"] = {
        "command": "/bin/sh",
        "args": ["-c", "echo the-only-line"],
    }
    register(ui_agent.addr, job)
    alloc = wait_until(
        lambda: [a for a in ui_agent.allocs("once") if a["client_status"] == "complete"],
        what="the batch allocation to complete",
    )[0]
    page.goto(f"{ui_agent.addr}/ui/allocation/{alloc['id']}?namespace=default")
    tail = page.locator("#log-tail")
    expect(tail).to_contain_text("the-only-line", timeout=10_000)
    expect(page.locator("#log-state")).to_have_text("ended (complete)", timeout=10_000)
    assert tail.inner_text().count("the-only-line") == 1


def test_promote_canaries_from_the_ui(ui_agent: DevAgent, page: Any) -> None:
    update = {**ROLLING, "canary": 1, "min_healthy_time": "1s"}
    register(ui_agent.addr, sleeper("canary", count=2, update=update))
    ui_agent.wait_running("canary", 2)
    wait_until(
        lambda: ui_agent.get("/v1/job/canary/deployment")["status"] == "successful",
        timeout=60,
        what="the first deployment to finish",
    )
    page.goto(ui_agent.addr + "/ui/job/canary?namespace=default")
    changed = sleeper("canary", count=2, update=update)
    changed["groups"]["g"]["tasks"]["t"]["config"]["args"] = ["3601"]
    register(ui_agent.addr, changed)
    progress = page.locator('.progress-row[data-group="g"] .progress-text')
    expect(progress).to_contain_text("1 canary", timeout=10_000)
    expect(progress).to_have_text(re.compile(r"^1 / 2 healthy"), timeout=30_000)
    page.get_by_role("button", name="Promote canaries").click()
    page.get_by_role("dialog").get_by_role("button", name="Promote").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(page.locator("#deployment")).to_have_attribute(
        "data-status", "successful", timeout=60_000
    )
    assert ui_agent.get("/v1/job/canary/deployment")["groups"]["g"]["promoted"] is True


def test_node_eligibility_and_drain_from_the_ui(ui_agent: DevAgent, page: Any) -> None:
    # a batch allocation running: a drain leaves it until the deadline (an hour), so the
    # drain lasts until it is stopped (a service allocation would be stopped at once, and
    # the drain complete as soon as its task exited: on a busy machine, before the page
    # showed it)
    register(ui_agent.addr, sleeper("resident", type="batch"))
    ui_agent.wait_running("resident", 1)
    node = ui_agent.get("/v1/nodes")[0]
    page.goto(f"{ui_agent.addr}/ui/node/{node['id']}")
    dialog = page.get_by_role("dialog")

    page.get_by_role("button", name="Mark ineligible").click()
    dialog.get_by_role("button", name="Confirm").click()
    wait_until(
        lambda: ui_agent.get(f"/v1/node/{node['id']}")["eligibility"] == "ineligible",
        what="the node to be ineligible",
    )
    expect(page.get_by_role("button", name="Mark eligible")).to_be_visible(timeout=5_000)

    page.get_by_role("button", name="Drain…").click()
    dialog.get_by_role("button", name="Confirm").click()
    wait_until(lambda: ui_agent.get(f"/v1/node/{node['id']}")["drain"], what="the drain")
    page.get_by_role("button", name="Stop drain").click()
    dialog.get_by_role("button", name="Confirm").click()
    wait_until(
        lambda: not ui_agent.get(f"/v1/node/{node['id']}")["drain"], what="the drain to stop"
    )
    page.get_by_role("button", name="Mark eligible").click()
    dialog.get_by_role("button", name="Confirm").click()
    wait_until(
        lambda: ui_agent.get(f"/v1/node/{node['id']}")["eligibility"] == "eligible",
        what="the node to be eligible again",
    )
    expect(page.get_by_role("button", name="Mark ineligible")).to_be_visible(timeout=5_000)
