"""``podium operator migrate`` and ``podium operator snapshot restore --etcd`` through the
real CLI (typer's runner), against a real etcd member and real SQLite data dirs.

Exit statuses as docs/cli.md has them: 0 done; 1 refused (one line, nothing changed);
2 a wrong command line (a usage error naming the option), checked before anything is
read or written.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from podium.server.keyring import Keyring
from podium.state.datadir import DataDirLock, open_store, store_path
from podium.state.errors import StoreDamaged
from podium.state.etcd_member import EtcdCluster, free_port
from tests.cli.conftest import Invoke
from tests.e2e.conftest import PODIUM, stop_process, wait_until
from tests.server.test_store_process import sleep_job
from tests.state.etcd_support import need_etcd
from tests.state.test_etcd_admin import (
    etcd_rows,
    everything,
    lease_leader,
    save_snapshot,
    server_store,
    sqlite_rows,
    used_cluster,
)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    need_etcd()
    cluster = EtcdCluster.start(1, tmp_path_factory.mktemp("etcd"))
    yield cluster
    cluster.close()


_names = iter(range(1_000_000))


@pytest.fixture
def name() -> str:
    return f"c{os.getpid()}-{next(_names)}"


def everything_named(etcd: EtcdCluster, name: str) -> list[tuple[str, bytes]]:
    """The cluster's keys (relative to its prefix) and values."""
    prefix = f"/podium/{name}/"
    return [(k.removeprefix(prefix), v) for k, v, _ in everything(etcd, name)]


def to(etcd: EtcdCluster) -> str:
    """The member as ``etcd://HOST:PORT``."""
    return "etcd://" + etcd.endpoints[0].removeprefix("http://")


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_migrate_moves_the_store_and_says_how_to_start_the_servers(
    cli: Invoke, etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server_store(data_dir, seed=20, allocs=100)
    key = Keyring.load_or_create(data_dir / "server" / "keyring").active  # as a start makes
    index, rows, cluster_id = sqlite_rows(data_dir)
    result = cli(
        "operator", "migrate", "--from", f"sqlite:{data_dir}", "--to", to(etcd),
        "--etcd-cluster", name,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Migrated index {index} (")
    assert f"of cluster {cluster_id} from {data_dir} into etcd cluster {name!r}" in lines[0]
    aside = next((data_dir / "server").glob("state.db.migrated-*"))
    assert lines[1] == (
        f"The SQLite store is kept at {aside} (the way back); a server started on it without "
        "--etcd is refused."
    )
    assert lines[2] == (
        f"Start every server with --etcd {etcd.endpoints[0]} --etcd-cluster {name} "
        f"--keyring-file PATH, PATH a copy of {data_dir}/server/keyring/{key.id}.key "
        f"(key {key.id}: it seals the variables)."
    )
    assert etcd_rows(etcd, name) == (index, rows, cluster_id)
    assert sqlite_rows(aside) == (index, rows, cluster_id)
    assert dict(everything_named(etcd, name))["keyring_id"] == key.id.encode()

    # -o json: the receipt as data; the default cluster name and http:// URLs
    other = tmp_path / "other"
    server_store(other, seed=21)  # it ran with --keyring-file: no keyring in its data dir
    before = sqlite_rows(other)
    result = cli(
        "operator", "migrate", "--from", f"sqlite:{other}",
        "--to", f"{etcd.endpoints[0]},{etcd.endpoints[0]}", "--etcd-cluster", name + "-2",
        "-o", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    receipt = json.loads(result.stdout)
    assert receipt["index"] == before[0] and receipt["cluster_id"] == before[2]
    assert receipt["etcd_cluster"] == name + "-2" and receipt["data_dir"] == str(other)
    assert receipt["etcd"] == [etcd.endpoints[0]] * 2
    assert sum(receipt["objects"].values()) == len(before[1])
    assert receipt["keyring_id"] is None and receipt["keyring_file"] is None
    assert Path(receipt["store_moved_to"]).parent == other / "server"
    assert etcd_rows(etcd, name + "-2") == before


def test_migrate_refusals_exit_1_with_one_line_and_change_nothing(
    cli: Invoke, etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    server_store(first, seed=22)
    server_store(second, seed=23)

    def migrate(data_dir: Path, *more: str) -> tuple[int, str]:
        result = cli(
            "operator", "migrate", "--from", f"sqlite:{data_dir}", "--to", to(etcd),
            "--etcd-cluster", name, *more,
        )  # fmt: skip
        assert result.exit_code == 0 or result.stdout == ""  # a refusal prints no receipt
        return result.exit_code, result.stderr

    assert migrate(first)[0] == 0
    held = everything(etcd, name)
    # etcd already holds the cluster
    code, err = migrate(second)
    assert code == 1
    assert one_line(err).startswith("Error: etcd cluster http://")
    assert f"already holds Podium cluster {name!r}" in err and "--etcd-cluster" in err
    error = json.loads(migrate(second, "-o", "json")[1])["error"]
    assert (error["kind"], error["exit_code"]) == ("error", 1)
    assert "already holds" in error["message"]
    assert everything(etcd, name) == held

    # a server holds the data dir (into a free name: the lock is what refuses)
    running = DataDirLock(second, "serving")
    try:
        result = cli(
            "operator", "migrate", "--from", f"sqlite:{second}", "--to", to(etcd),
            "--etcd-cluster", name + "-free",
        )  # fmt: skip
    finally:
        running.close()
    assert result.exit_code == 1
    assert "state.lock is held by another process" in one_line(result.stderr)
    assert everything(etcd, name + "-free") == []

    # a damaged store: the line the server itself would print
    store_path(second).write_bytes(b"garbage, not SQLite" * 50)
    with pytest.raises(StoreDamaged) as started:
        open_store(second)
    result = cli(
        "operator", "migrate", "--from", f"sqlite:{second}", "--to", to(etcd),
        "--etcd-cluster", name + "-free",
    )  # fmt: skip
    assert result.exit_code == 1
    assert one_line(result.stderr) == f"Error: {started.value}"
    assert everything(etcd, name + "-free") == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--from", "sqlite:{d}", "--to", "etcd://"], "--to: 'etcd://' is not an etcd client URL"),
        (["--from", "foo", "--to", "etcd://h:2379"], "--from 'foo': expected sqlite:DATA_DIR"),
        (["--from", "sqlite:", "--to", "etcd://h:2379"], "--from 'sqlite:' names no data dir"),
        (["--from", "sqlite:{d}", "--to", "sqlite:{d}"], "is not an etcd client URL"),
        (["--from", "sqlite:{d}", "--to", "etcd://h"], "--to: 'etcd://h' is not an etcd client"),
        (["--from", "sqlite:{d}", "--to", ","], "--to needs at least one etcd client URL"),
        (
            ["--from", "sqlite:{d}", "--to", "etcd://h:1", "--etcd-cluster", "a/b"],
            "--etcd-cluster: 'a/b' is not a cluster name",
        ),
        (["--from", "sqlite:{d}"], "Missing option '--to'"),
    ],
)
def test_a_wrong_command_line_is_a_usage_error_naming_the_option(
    cli: Invoke, tmp_path: Path, args: list[str], says: str
) -> None:
    """Checked before etcd is asked anything or the data dir is touched (h is no host)."""
    data_dir = tmp_path / "data"
    result = cli("operator", "migrate", *(a.format(d=data_dir) for a in args))
    assert result.exit_code == 2, result.output
    assert says in result.stderr
    assert not data_dir.exists()
    if "Missing" not in says:  # our own usage errors follow -o json too
        as_json = cli("operator", "migrate", *(a.format(d=data_dir) for a in args), "-o", "json")
        error = json.loads(as_json.stderr)["error"]
        assert (error["kind"], error["exit_code"]) == ("usage", 2)


def snapshot_of(data_dir: Path, seed: int, dest: Path) -> tuple[int, dict[tuple[str, str], bytes]]:
    server_store(data_dir, seed=seed, allocs=50)
    save_snapshot(data_dir, dest)
    return sqlite_rows(data_dir)[:2]


def test_restore_into_etcd_replaces_what_it_held_and_waits_for_no_leader(
    cli: Invoke, etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    used_cluster(etcd, name)  # index 60, with a log and an old snapshot
    snap = tmp_path / "s.snap"
    index, rows = snapshot_of(tmp_path / "data", 24, snap)

    def restore(*more: str) -> tuple[int, str, str]:
        result = cli(
            "operator", "snapshot", "restore", str(snap), "--etcd", to(etcd),
            "--etcd-cluster", name, *more,
        )  # fmt: skip
        return result.exit_code, result.stdout, result.stderr

    leader, lease = lease_leader(etcd, name)
    held = everything(etcd, name)
    code, out, err = restore()
    assert (code, out) == (1, "")
    assert "stop every server of the cluster first" in one_line(err)
    assert everything(etcd, name) == held

    leader.client.lease_revoke(lease)
    code, out, err = restore()
    assert code == 0, err
    assert out.splitlines() == [
        out.splitlines()[0],
        "It replaced index 60.",
        "Start the servers again to serve it.",
    ]
    assert out.startswith(f"Restored index {index} (")
    assert f"into etcd cluster {name!r} ({etcd.endpoints[0]})" in out
    assert etcd_rows(etcd, name)[:2] == (index, rows)
    code, out, _ = restore("-o", "json")
    assert code == 0 and json.loads(out)["replaced_index"] == index
    leader.close()


def test_a_bad_snapshot_is_refused_before_etcd_changes(
    cli: Invoke, etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    used_cluster(etcd, name)
    held = everything(etcd, name)
    bad = tmp_path / "bad.snap"
    bad.write_bytes(b"not a snapshot")
    result = cli(
        "operator", "snapshot", "restore", str(bad), "--etcd", to(etcd), "--etcd-cluster", name
    )
    assert result.exit_code == 1
    assert "is not a valid Podium snapshot: not a SQLite file" in one_line(result.stderr)
    assert everything(etcd, name) == held


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give exactly one of --data-dir DIR and --etcd URLS"),
        (["--data-dir", "{d}", "--etcd", "etcd://h:1"], "give exactly one of --data-dir"),
        (["--etcd", "etcd://"], "--etcd: 'etcd://' is not an etcd client URL"),
        (["--etcd", "http://h:1", "--etcd-cluster", ""], "--etcd-cluster: '' is not a cluster"),
    ],
)
def test_restore_takes_exactly_one_of_data_dir_and_etcd(
    cli: Invoke, tmp_path: Path, args: list[str], says: str
) -> None:
    snap = tmp_path / "s.snap"
    snapshot_of(tmp_path / "source", 25, snap)
    data_dir = tmp_path / "data"
    result = cli(
        "operator", "snapshot", "restore", str(snap), *(a.format(d=data_dir) for a in args)
    )
    assert result.exit_code == 2, result.output
    assert says in result.stderr
    assert not data_dir.exists()


def test_restore_into_a_data_dir_works_as_before(cli: Invoke, tmp_path: Path) -> None:
    snap = tmp_path / "s.snap"
    index, rows = snapshot_of(tmp_path / "source", 26, snap)
    data_dir = tmp_path / "data"
    result = cli("operator", "snapshot", "restore", str(snap), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Restored index {index} (")
    assert sqlite_rows(data_dir)[:2] == (index, rows)


def test_an_etcd_that_does_not_answer_is_named_and_nothing_changes(
    cli: Invoke, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server_store(data_dir, seed=27)
    before = sqlite_rows(data_dir)
    nobody = f"127.0.0.1:{free_port()}"
    result = cli("operator", "migrate", "--from", f"sqlite:{data_dir}", "--to", f"etcd://{nobody}")
    assert result.exit_code == 1
    line = one_line(result.stderr)
    assert "etcd did not answer" in line and f"http://{nobody}" in line
    assert sqlite_rows(data_dir) == before


@pytest.mark.e2e
def test_a_migrated_single_server_serves_on_etcd_as_it_was(
    etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    """Real processes end to end: a single server writes a job and a variable and stops;
    `podium operator migrate` moves it; `podium server --etcd` on its data dir serves the
    job, opens the variable (the same keyring) at the same index; a server without the key
    is refused, naming it; the old server without --etcd is refused."""
    data_dir = tmp_path / "single"
    single = Server(data_dir, tmp_path / "single.log")
    single.start()
    assert single.post("/v1/jobs", {"job": sleep_job("web")}).status_code == 200
    put = httpx.put(f"{single.url}/v1/var/app/db", json={"items": {"pw": "s3cret"}}, timeout=10)
    assert put.status_code == 200, put.text
    index = single.index()
    single.stop()

    migrated = subprocess.run(
        [*PODIUM, "operator", "migrate", "--from", f"sqlite:{data_dir}", "--to", to(etcd),
         "--etcd-cluster", name],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith(f"Migrated index {index} (")

    on_etcd = ["--etcd", etcd.endpoints[0], "--etcd-cluster", name]
    keyless = Server(tmp_path / "fresh", tmp_path / "fresh.log", on_etcd).run_once()
    assert keyless.returncode != 0
    key_id = dict(everything_named(etcd, name))["keyring_id"].decode()
    assert f"sealed with keyring key {key_id}" in keyless.stdout + keyless.stderr

    ha = Server(data_dir, tmp_path / "ha.log", on_etcd)
    ha.start()
    try:
        wait_until(lambda: ha.get("/v1/status/leader").json()["leader"], what="a leader")
        assert ha.index() >= index
        assert ha.get("/v1/job/web").json()["id"] == "web"
        assert ha.get("/v1/var/app/db").json()["items"] == {"pw": "s3cret"}
    finally:
        ha.stop()
    refused = Server(data_dir, tmp_path / "single.log").run_once()
    assert refused.returncode == 1
    assert "state.db is missing, but this data dir held cluster" in refused.stderr


class Server:
    """`podium server` on loopback, with ``extra`` arguments (say, --etcd)."""

    def __init__(self, data_dir: Path, log: Path, extra: list[str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.args = [
            *PODIUM, "server", "--data-dir", str(data_dir),
            "--http-addr", self.url.removeprefix("http://"), "--dns-addr", "off", *(extra or []),
        ]  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def run_once(self) -> subprocess.CompletedProcess[str]:
        """Start it expecting a refusal: its exit status and output."""
        return subprocess.run(self.args, capture_output=True, text=True, timeout=60)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-3000:]}")
            return self.get("/v1/status").status_code == 200

        wait_until(up, timeout=60, what="the server")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def post(self, path: str, body: dict[str, object]) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=10)

    def index(self) -> int:
        return int(self.get("/v1/status").json()["index"])
