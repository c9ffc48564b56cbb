"""A test run stopped midway leaves its cluster running; the next run clears it by its ledger
entry (paas.localcluster.clear_leftovers), and leaves alone what is not that cluster's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from paas.localcluster import LocalCluster, _pid_alive, clear_leftovers
from tests.waiting import wait_until

pytestmark = pytest.mark.docker  # it removes the cluster's containers with `docker`


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_cluster_whose_owner_died_is_cleared_and_nothing_else(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    cluster = LocalCluster(root=tmp_path / "c1", cluster_id="leftover1", ledger=ledger)
    cluster.root.mkdir()
    worker = cluster._spawn("consul-server", ["sleep", "300"])  # stands in for a daemon
    entry = ledger / "leftover1.json"
    record = json.loads(entry.read_text())
    assert record["owner"] == os.getpid() and record["pids"] == {"consul-server": worker}

    # Its owner still runs (this very process): nothing is touched.
    other = LocalCluster(root=tmp_path / "c2", cluster_id="leftover2", ledger=ledger)
    other.root.mkdir()
    survivor = other._spawn("controller", ["sleep", "300"])
    entry2 = ledger / "leftover2.json"
    alive_owner = subprocess.Popen(["sleep", "300"])
    record2 = json.loads(entry2.read_text())
    entry2.write_text(json.dumps({**record2, "owner": alive_owner.pid}))
    # A PID of the record that is now another process (not in the cluster's root) stays.
    stranger = subprocess.Popen(["sleep", "300"], cwd=tmp_path)
    entry.write_text(json.dumps({**record, "owner": dead_pid(),
                                 "pids": {"consul-server": worker, "router": stranger.pid}}))
    try:
        assert clear_leftovers(ledger) == ["leftover1"]
        wait_until(lambda: not _pid_alive(worker), 10, what="the leftover process stopped")
        assert not entry.exists()
        assert _pid_alive(stranger.pid), "a reused PID outside the cluster's root was stopped"
        assert _pid_alive(survivor) and entry2.exists(), "a live run's cluster was cleared"
    finally:
        for proc in (stranger, alive_owner):
            proc.kill()
            proc.wait()
        other.down(remove_containers=False)
        cluster.down(remove_containers=False)
    assert not entry2.exists()  # down() takes the cluster out of the ledger
    assert clear_leftovers(tmp_path / "no-ledger") == []
