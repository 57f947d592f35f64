"""The dashboard in headless Chromium (Debian's package, driven by Playwright) over a real origin and
two real nodes: log in, see both nodes and a deploy appear, roll back with confirmation, screenshot.

The screenshot goes to `tmp_path/artifacts/dashboard.png`, and also to `$EDGE_TEST_ARTIFACTS/`
when that variable is set.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import INSTALL_TIMEOUT_S, artifacts_dir, install_chromium
from fleet.fleet_harness import Fleet, run_edge, wait_for, write_version
from playwright.sync_api import Browser, ConsoleMessage, expect, sync_playwright

from edge.control.client import OriginClient
from edge.control.messages import FunctionStatus, NodeInfo, NodeReport


# Not session-scoped: Playwright's sync API keeps an event loop running in this thread until it
# stops, and later tests that run their own loop would fail.
@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Headless Chromium, installed with apt when it is missing (see tests/browser.py)."""
    executable = install_chromium()
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium refuses to run its sandbox as root, which tests here are.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    running = Fleet(tmp_path / "fleet")
    running.root.mkdir()
    try:
        yield running
    finally:
        running.close()


# The first run on a clean machine installs Chromium inside this test's setup.
@pytest.mark.timeout(300 + 2 * INSTALL_TIMEOUT_S)
def test_log_in_see_a_deploy_and_roll_back(chromium: Browser, fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    nodes = [fleet.start_node(), fleet.start_node()]
    first, v1 = write_version(tmp_path, "v1")
    second, v2 = write_version(tmp_path, "v2")
    deployed = run_edge("deploy", str(first), "--wait", env=origin.env())
    assert deployed.returncode == 0, deployed
    # A third, made-up node whose report carries markup: the page must show it as text.
    markup = '<img src=x onerror="window.__xss = 1"><script>window.__xss = 2</script>'
    token = origin.node_token()
    spy = OriginClient(origin.url, token)
    spy.register(
        NodeInfo(node_id="markup", hostname="markup", arch="x", python="3.13", cpus=1, memory_bytes=1,
                 labels={"note": markup})
    )  # fmt: skip
    spy.report(
        NodeReport(
            node_id="markup",
            applied_revision=1,
            functions=[FunctionStatus(name="hello", versions=[v1], state="error", error=markup)],
            errors=[markup],
        )
    )

    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", console)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    expect.set_options(timeout=15_000)

    page.goto(origin.url + "/")
    page.fill("#token", "edge_admin_not-a-token")
    page.click("#login button[type=submit]")
    expect(page.locator("p.error")).to_contain_text("Unknown token.")
    page.fill("#token", origin.admin_token)
    page.click("#login button[type=submit]")

    card = page.locator('[data-function="hello"]')
    expect(card.locator(".releases")).to_have_text(f"serving {v1[:12]} 100%")
    for node in nodes:
        row = page.locator(f'#nodes tr[data-node="{node.node_id}"]')
        expect(row.locator("td.revision")).to_have_text("1")
        expect(row).to_contain_text("live")
    markup_row = page.locator('#nodes tr[data-node="markup"]')
    expect(markup_row).to_contain_text(markup)
    expect(card).to_contain_text(f"markup: {markup}")
    assert page.evaluate("window.__xss") is None
    assert page.locator("script").count() == 1 and page.locator("img").count() == 0

    # A deploy made elsewhere shows up on its own (the page refreshes itself).
    # (Without --wait: the made-up node never applies anything, and --wait waits for every node.)
    deployed = run_edge("deploy", str(second), env=origin.env())
    assert deployed.returncode == 0, deployed
    expect(card.locator(".releases")).to_have_text(f"serving {v2[:12]} 100%")
    expect(page.locator("#deploys tbody tr").first).to_have_attribute("data-version", v2)
    for node in nodes:
        expect(page.locator(f'#nodes tr[data-node="{node.node_id}"] td.revision')).to_have_text("2")

    # Rollback asks first; cancelling changes nothing.
    rollback = card.locator('button[data-action="rollback"]')
    expect(rollback).to_have_text(f"Roll back to {v1[:12]}")
    rollback.click()
    expect(page.locator("#confirm-text")).to_have_text(f"Roll back hello from {v2[:12]} to {v1[:12]}?")
    page.click("#confirm-cancel")
    page.wait_for_timeout(300)
    assert origin.admin().function("hello").releases[0].version == v2
    rollback.click()
    page.click("#confirm-ok")

    expect(page.locator("#message")).to_contain_text(f"Rollback: hello now serves {v1[:12]} 100%")
    expect(card.locator(".releases")).to_have_text(f"serving {v1[:12]} 100%")
    assert [(r.version, r.weight) for r in origin.admin().function("hello").releases] == [(v1, 100)]
    for node in nodes:
        wait_for(lambda node=node: node.serves(b"v1"), 15, f"node {node.node_id} to serve v1 again")
        expect(page.locator(f'#nodes tr[data-node="{node.node_id}"] td.revision')).to_have_text("3")

    # Traffic comes from the nodes' reports (their heartbeat carries each function's stats).
    for node in nodes:
        for _ in range(5):
            assert node.serves(b"v1")
    page.wait_for_function(
        "() => Number(document.querySelector('[data-function=hello] .stats').dataset.requests) >= 10"
    )

    places = artifacts_dir(tmp_path)
    shot = places[0] / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    for place in places[1:]:
        shutil.copy(shot, place / "dashboard.png")
    assert shot.stat().st_size > 10_000
    # The one failed load: the wrong token's 401 answer to the login form.
    assert problems == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
        f" ({origin.url}/login)"
    ]

    # Back to v2 by picking it, then a canary promoted from the page.
    card.locator(f'tr[data-version="{v2}"] button[data-action="rollback-to"]').click()
    expect(page.locator("#confirm-text")).to_have_text(f"Switch hello to {v2[:12]} (100% of traffic)?")
    page.click("#confirm-ok")
    expect(card.locator(".releases")).to_have_text(f"serving {v2[:12]} 100%")
    third, v3 = write_version(tmp_path, "v3")
    assert run_edge("deploy", str(third), "--canary", "10", env=origin.env()).returncode == 0
    expect(card.locator(".releases")).to_have_text(f"serving {v2[:12]} 90% + {v3[:12]} 10%")
    card.locator('button[data-action="promote"]').click()
    expect(page.locator("#confirm-text")).to_have_text(
        f"Promote hello: send all traffic to {v3[:12]} (now 10%)?"
    )
    page.click("#confirm-ok")
    expect(card.locator(".releases")).to_have_text(f"serving {v3[:12]} 100%")
    assert [(r.version, r.weight) for r in origin.admin().function("hello").releases] == [(v3, 100)]

    # Logging out ends the session: the page is the login form again.
    page.click("#logout button")
    expect(page.locator("#token")).to_be_visible()
    assert page.request.get(origin.url + "/ui/state").status == 401
    context.close()
