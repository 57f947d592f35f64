"""The admin CLI given several origins (`--origin URL1,URL2`, EDGE_ORIGIN): it passes over one that
cannot be reached, for every admin command, and says why when none can."""

from __future__ import annotations

import json
from pathlib import Path

from fleet_harness import Fleet, run_edge, write_version

from loadtest._servers import free_port


def test_every_admin_command_passes_over_an_origin_that_cannot_be_reached(
    fleet: Fleet, tmp_path: Path
) -> None:
    origin = fleet.start_origin()
    dead = f"http://127.0.0.1:{free_port()}"
    env = {**origin.env(), "EDGE_ORIGIN": f"{dead},{origin.url}"}

    def edge(*args: str) -> str:
        result = run_edge(*args, env=env)
        assert (result.returncode, result.stderr) == (0, ""), result
        return result.stdout

    first, v1 = write_version(tmp_path, "one")
    second, v2 = write_version(tmp_path, "two")
    third, v3 = write_version(tmp_path, "three")
    assert v1[:12] in edge("deploy", str(first))
    assert v2[:12] in edge("deploy", str(second))
    assert v1[:12] in edge("rollback", "hello")
    assert v3[:12] in edge("deploy", str(third), "--canary", "30")
    assert v3[:12] in edge("promote", "hello")
    live = json.loads(edge("ls", "--json"))
    assert [(f["name"], [r["version"] for r in f["releases"]]) for f in live] == [("hello", [v3])]
    assert {v1, v2, v3} <= {v["version"] for v in json.loads(edge("versions", "hello", "--json"))["versions"]}
    assert "purge" in edge("purge", "hello", "--all")
    value = tmp_path / "value"
    value.write_text("s3cret")
    edge("secret", "set", "hello", "API_KEY", "--from-file", str(value))
    assert "API_KEY" in edge("secret", "ls", "hello")
    edge("logs", "hello", "--since", "1h")
    created = run_edge("origin", "token", "create", "--role", "node", env=env)
    assert (created.returncode, created.stderr.startswith("token ")) == (0, True), created
    token_id = created.stderr.split()[1].rstrip(":")
    assert token_id in edge("origin", "token", "ls")
    # --origin takes the same list, and wins over EDGE_ORIGIN.
    flag = run_edge("ls", "--origin", f"{dead},{origin.url}", env={**env, "EDGE_ORIGIN": dead})
    assert (flag.returncode, flag.stderr) == (0, ""), flag
    assert "hello" in flag.stdout


def test_when_no_origin_can_be_reached_each_reason_is_given(fleet: Fleet) -> None:
    origin = fleet.start_origin()
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    result = run_edge("ls", env={**origin.env(), "EDGE_ORIGIN": ",".join(dead)})
    fix = "is it running? Start one (`edge up`, or `edge origin`), or point EDGE_ORIGIN or --origin at it"
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: cannot reach the origin at {dead[0]}: Connection refused; {fix};"
        f" cannot reach the origin at {dead[1]}: Connection refused; {fix}\n"
    )


def test_a_list_with_an_empty_entry_is_refused(fleet: Fleet) -> None:
    origin = fleet.start_origin()
    result = run_edge("ls", env={**origin.env(), "EDGE_ORIGIN": f"{origin.url},"})
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "error: origin URL: Expected http(s)://host[:port], or several separated by commas,"
        f" got '{origin.url},'\n"
    )
