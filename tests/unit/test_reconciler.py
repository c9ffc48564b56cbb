"""The controller's reconcile between deployments (paas/controller/reconciler.py): table-driven."""

from __future__ import annotations

import pytest

from paas.controller.reconciler import AppView, InstanceView, Placement, reconcile


def inst(i: str, node: str, *, app: str = "web", process: str = "web", desired: str = "running",
         role: str = "live", release: int = 1) -> InstanceView:
    return InstanceView(id=i, app=app, release=release, process=process, role=role, node=node,
                        desired=desired)


APP = AppView(name="web", live_release=1, scale={"web": 3})

CASES = [
    ("all healthy", [APP], [inst("a", "n1"), inst("b", "n2"), inst("c", "n1")], {"n1", "n2"},
     (), ()),
    ("node lost", [APP], [inst("a", "n1"), inst("b", "n2"), inst("c", "n1")], {"n2"},
     ("a", "c"), (Placement(app="web", release=1, process="web", count=2),)),
    ("one missing", [APP], [inst("a", "n1"), inst("b", "n2")], {"n1", "n2"},
     (), (Placement(app="web", release=1, process="web", count=1),)),
    ("draining on a lost node is lost too", [APP],
     [inst("a", "n1", desired="draining"), inst("b", "n2"), inst("c", "n2"), inst("d", "n2")],
     {"n2"}, ("a",), ()),
    ("stopped instances are ignored", [APP],
     [inst("a", "n1", desired="stopped"), inst("b", "n2"), inst("c", "n2"), inst("d", "n2")],
     {"n2"}, (), ()),
    ("a deploying app is left alone",
     [AppView(name="web", live_release=1, scale={"web": 3}, deploying=True)],
     [inst("a", "n1")], {"n2"}, (), ()),
    ("never deployed: nothing to place", [AppView(name="web", live_release=None, scale={})],
     [], {"n1"}, (), ()),
    ("control instances do not count towards scale", [APP],
     [inst("a", "n1"), inst("b", "n1"), inst("c", "n1", role="control")], {"n1"},
     (), (Placement(app="web", release=1, process="web", count=1),)),
    ("per process type", [AppView(name="web", live_release=2, scale={"web": 1, "worker": 2})],
     [inst("a", "n1", release=2), inst("w", "n1", process="worker", release=2)], {"n1"},
     (), (Placement(app="web", release=2, process="worker", count=1),)),
]


@pytest.mark.parametrize("name, apps, instances, ready, lost, place", CASES,
                         ids=[c[0] for c in CASES])
def test_reconcile(name, apps, instances, ready, lost, place):
    plan = reconcile(apps=apps, instances=instances, ready_nodes=ready)
    assert plan.lost == lost
    assert plan.place == place


def test_running_the_plan_again_after_applying_it_changes_nothing():
    instances = [inst("a", "n1"), inst("b", "n2"), inst("c", "n1")]
    plan = reconcile(apps=[APP], instances=instances, ready_nodes={"n2"})
    applied = [inst(i.id, i.node, desired="stopped") if i.id in plan.lost else i
               for i in instances] + [inst("new1", "n2"), inst("new2", "n2")]
    assert reconcile(apps=[APP], instances=applied, ready_nodes={"n2"}).empty
