"""A test run stopped midway leaves its cluster running; the next run clears it by its ledger
entry (paas.localcluster.clear_leftovers), and leaves alone what is not that cluster's, or
what a run still going owns (this one included)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from paas import machines
from paas.localcluster import LocalCluster, pid_alive, clear_leftovers, process_started
from tests.waiting import wait_until

pytestmark = pytest.mark.docker  # it removes the cluster's containers with `docker`


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def stand_in(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> int:
    """A `sleep` spawned as the cluster's Consul server (in the cluster's root, as `up` does)."""
    monkeypatch.setattr(cluster, "_process", lambda name: machines.Process(
        name, ("sleep", "300"), "a stand-in"))
    cluster.root.mkdir()
    return cluster._spawn("consul-server")


def test_a_cluster_whose_owner_died_is_cleared_and_nothing_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = tmp_path / "ledger"
    mine = LocalCluster(root=tmp_path / "c1", cluster_id="leftover1", ledger=ledger)
    worker = stand_in(mine, monkeypatch)
    entry = ledger / "leftover1.json"
    record = json.loads(entry.read_text())
    assert record["pids"] == {"consul-server": worker}

    other = LocalCluster(root=tmp_path / "c2", cluster_id="leftover2", ledger=ledger)
    survivor = stand_in(other, monkeypatch)
    alive_owner = subprocess.Popen(["sleep", "300"])  # another run, still going
    entry2 = ledger / "leftover2.json"
    entry2.write_text(json.dumps({**json.loads(entry2.read_text()), "owner": alive_owner.pid,
                                  "owner_started": process_started(alive_owner.pid)}))
    stranger = subprocess.Popen(["sleep", "300"], cwd=tmp_path)
    try:
        # This very run owns leftover1: nothing is touched.
        assert clear_leftovers(ledger) == []
        assert pid_alive(worker) and entry.exists()

        # Its owner gone, leftover1's process is stopped; a PID of its record that is now
        # another process (outside the cluster's root) is spared; leftover2's owner runs.
        entry.write_text(json.dumps({**record, "owner": dead_pid(),
                                     "pids": {"consul-server": worker,
                                              "router": stranger.pid}}))
        assert clear_leftovers(ledger) == ["leftover1"]
        wait_until(lambda: not pid_alive(worker), 10, what="the leftover process stopped")
        assert not entry.exists()
        assert pid_alive(stranger.pid), "a reused PID outside the cluster's root was stopped"
        assert pid_alive(survivor) and entry2.exists(), "a live run's cluster was cleared"

        # An owner PID that now names another process (its start time differs) is dead.
        entry2.write_text(json.dumps({**json.loads(entry2.read_text()), "owner_started": 1}))
        assert clear_leftovers(ledger) == ["leftover2"]
        wait_until(lambda: not pid_alive(survivor), 10, what="leftover2 stopped")
    finally:
        for proc in (stranger, alive_owner):
            proc.kill()
            proc.wait()
        other.down(remove_containers=False)
        mine.down(remove_containers=False)
    assert clear_leftovers(tmp_path / "no-ledger") == []
