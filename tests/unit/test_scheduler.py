"""Table-driven tests of the pure scheduler: placement strategies, capacity, readiness,
constraints, determinism and the scale-down choice."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from paas.controller.scheduler import (
    BadPlacementRequest,
    Instance,
    Node,
    Plan,
    PlacementRequest,
    choose_to_stop,
    place,
    with_placements,
)


def node(name: str, *, cpu: float = 4.0, mem: int = 4096, ready: bool = True,
         labels: dict[str, str] | None = None, instances: tuple[Instance, ...] = ()) -> Node:
    return Node(name=name, address=f"127.0.0.{name[-1]}", cpu=cpu, memory_mb=mem,
                labels=labels or {}, ready=ready, instances=instances)


def web(app: str = "hello", *, cpu: float = 0.25, mem: int = 128, iid: str = "",
        process: str = "web") -> Instance:
    return Instance(app=app, process=process, cpu=cpu, memory_mb=mem, instance_id=iid)


def request(count: int, *, cpu: float = 0.25, mem: int = 128, strategy: str = "spread",
            constraints: dict[str, str] | None = None, app: str = "hello") -> PlacementRequest:
    return PlacementRequest(app=app, process="web", count=count, cpu=cpu, memory_mb=mem,
                            constraints=constraints or {},
                            strategy=strategy)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Case:
    name: str
    nodes: tuple[Node, ...]
    request: PlacementRequest
    placements: tuple[str, ...]
    unplaced: int = 0
    reason: str = ""


CASES = [
    Case("spread over 2 nodes alternates",
         (node("n1"), node("n2")), request(4),
         ("n1", "n2", "n1", "n2")),
    Case("spread over 3 nodes",
         (node("n3"), node("n1"), node("n2")), request(5),
         ("n1", "n2", "n3", "n1", "n2")),
    Case("spread fills the node with fewer instances of the app first",
         (node("n1", instances=(web(), web())), node("n2")), request(3),
         ("n2", "n2", "n1")),
    Case("spread ignores other apps' instances in the count but not in the share tie-break",
         (node("n1"), node("n2", instances=(web("other", cpu=2.0),))), request(2),
         ("n1", "n2")),
    Case("spread tie goes to the least allocated node",
         (node("n1", instances=(web("other", mem=2048),)), node("n2")), request(1),
         ("n2",)),
    Case("spread counts per process type",
         (node("n1", instances=(web(process="worker"),) * 3), node("n2", instances=(web(),))),
         request(1), ("n1",)),
    Case("capacity exhausted by memory, with reason",
         (node("n1", mem=256), node("n2", mem=300)), request(5),
         # the third goes to n2: both hold one, and n2 (128 of 300 MB) is less allocated
         ("n1", "n2", "n2", "n1"), unplaced=1, reason="insufficient memory on 2 nodes"),
    Case("capacity exhausted by cpu",
         (node("n1", cpu=0.5),), request(3),
         ("n1", "n1"), unplaced=1, reason="insufficient cpu on 1 node"),
    Case("existing reservations count against capacity",
         (node("n1", mem=512, instances=(web("other", mem=384),)), node("n2", mem=512)),
         request(3),
         ("n2", "n1", "n2"), unplaced=0),
    Case("cpu fractions sum exactly (0.1 * 10 == 1.0)",
         (node("n1", cpu=1.0),), request(11, cpu=0.1),
         ("n1",) * 10, unplaced=1, reason="insufficient cpu on 1 node"),
    Case("not-ready nodes are skipped",
         (node("n1", ready=False), node("n2")), request(2),
         ("n2", "n2")),
    Case("nothing ready",
         (node("n1", ready=False), node("n2", ready=False)), request(2),
         (), unplaced=2, reason="node not ready on 2 nodes"),
    Case("constraints select nodes",
         (node("n1", labels={"zone": "a"}), node("n2", labels={"zone": "b"}),
          node("n3", labels={"zone": "a", "ssd": "1"})),
         request(3, constraints={"zone": "a"}), ("n1", "n3", "n1")),
    Case("every constraint must hold",
         (node("n1", labels={"zone": "a"}), node("n3", labels={"zone": "a", "ssd": "1"})),
         request(2, constraints={"zone": "a", "ssd": "1"}), ("n3", "n3")),
    Case("mixed reasons, most frequent first",
         (node("n1", ready=False), node("n2", labels={"zone": "b"}), node("n3"),
          node("n4", mem=100, labels={"zone": "x"}), node("n5", mem=100, labels={"zone": "x"}),
          node("n6", mem=100, labels={"zone": "x"})),
         request(1, constraints={"zone": "x"}), (), unplaced=1,
         reason=("insufficient memory on 3 nodes, constraint unmet on 2 nodes, "
                 "node not ready on 1 node")),
    Case("no nodes at all",
         (), request(2), (), unplaced=2, reason="no nodes are registered"),
    Case("binpack fills the most allocated node first",
         (node("n1"), node("n2", instances=(web("other", mem=1024),)), node("n3")),
         request(3, strategy="binpack"), ("n2", "n2", "n2")),
    Case("binpack moves on when a node is full",
         (node("n1", mem=256), node("n2", mem=512)), request(5, strategy="binpack"),
         ("n1", "n1", "n2", "n2", "n2"), unplaced=0),
    Case("binpack on empty nodes starts with the first name",
         (node("n2"), node("n1")), request(2, strategy="binpack"), ("n1", "n1")),
    Case("zero count",
         (node("n1"),), request(0), ()),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_place(case: Case) -> None:
    plan = place(nodes=case.nodes, request=case.request)
    assert plan == Plan(placements=case.placements, unplaced=case.unplaced, reason=case.reason)


def test_place_respects_capacity_on_every_node() -> None:
    rng = random.Random(7)
    nodes = tuple(node(f"n{i}", cpu=rng.choice([1.0, 2.0]), mem=rng.choice([512, 1024]))
                  for i in range(10))
    req = request(200, cpu=0.3, mem=100)
    plan = place(nodes=nodes, request=req)
    after = with_placements(nodes=nodes, request=req, plan=plan)
    for n in after:
        assert n.usage[2] <= n.usage[0] and n.usage[3] <= n.usage[1]
    assert plan.unplaced == 200 - len(plan.placements) > 0
    assert len(plan.placements) == sum(len(n.instances) for n in after)


@pytest.mark.parametrize("strategy", ["spread", "binpack"])
def test_place_is_deterministic_whatever_the_node_order(strategy: str) -> None:
    rng = random.Random(42)
    nodes = [node(f"n{i}", mem=rng.choice([1024, 2048]),
                  instances=tuple(web(rng.choice(["a", "b"])) for _ in range(rng.randrange(4))))
             for i in range(8)]
    req = request(12, strategy=strategy, app="a")
    first = place(nodes=nodes, request=req)
    for _ in range(5):
        rng.shuffle(nodes)
        assert place(nodes=nodes, request=req) == first


def test_spread_keeps_instances_balanced_across_requests() -> None:
    nodes: tuple[Node, ...] = tuple(node(f"n{i}", mem=100_000, cpu=100) for i in range(5))
    for app in ["a", "b", "c"]:
        for _ in range(3):  # scaling up in three steps still ends balanced
            req = request(3, app=app)
            nodes = with_placements(nodes=nodes, request=req, plan=place(nodes=nodes, request=req))
    for app in ["a", "b", "c"]:
        counts = [n.usage[5][(app, "web")] for n in nodes]
        assert max(counts) - min(counts) <= 1, (app, counts)


def test_with_placements_checks_ids_and_keeps_untouched_nodes() -> None:
    nodes = (node("n1"), node("n2"))
    req = request(1)
    plan = place(nodes=nodes, request=req)
    after = with_placements(nodes=nodes, request=req, plan=plan,
                            instance_ids=["hello-v1-web-abcdef"])
    assert after[0].instances == (web(iid="hello-v1-web-abcdef"),)
    assert after[1] is nodes[1]
    with pytest.raises(BadPlacementRequest):
        with_placements(nodes=nodes, request=req, plan=plan, instance_ids=[])


@pytest.mark.parametrize("kwargs", [
    {"count": -1}, {"count": 1.5}, {"count": True}, {"cpu": -0.1}, {"memory_mb": -1},
    {"strategy": "random"},
])
def test_bad_requests_are_refused(kwargs: dict) -> None:
    base = dict(app="hello", process="web", count=1, cpu=0.1, memory_mb=64)
    with pytest.raises(BadPlacementRequest):
        PlacementRequest(**{**base, **kwargs})


def test_duplicate_node_names_are_refused() -> None:
    with pytest.raises(BadPlacementRequest, match="unique"):
        place(nodes=(node("n1"), node("n1")), request=request(1))


STOP_CASES = [
    ("most crowded node first, then rebalance",
     (node("n1", instances=(web(iid="a1"), web(iid="a2"), web(iid="a3"))),
      node("n2", instances=(web(iid="b1"), web("other", iid="o1")))),
     3, [("n1", "a3"), ("n1", "a2"), ("n2", "b1")]),
    ("tie goes to the most allocated node",
     (node("n1", instances=(web(iid="a1"),)),
      node("n2", instances=(web(iid="b1"), web("other", mem=1024, iid="x1")))),
     1, [("n2", "b1")]),
    ("tie on allocation goes to the first name",
     (node("n2", instances=(web(iid="b1"),)), node("n1", instances=(web(iid="a1"),))),
     1, [("n1", "a1")]),
    ("not-ready nodes go first",
     (node("n1", instances=(web(iid="a1"), web(iid="a2"))),
      node("n2", ready=False, instances=(web(iid="b1"),))),
     2, [("n2", "b1"), ("n1", "a2")]),
    ("only the app and process asked for",
     (node("n1", instances=(web("other", iid="o1"), web(process="worker", iid="w1"),
                            web(iid="a1"))),),
     5, [("n1", "a1")]),
    ("nothing to stop", (node("n1"),), 2, []),
    ("zero", (node("n1", instances=(web(iid="a1"),)),), 0, []),
]


@pytest.mark.parametrize("nodes,count,expected", [c[1:] for c in STOP_CASES],
                         ids=[c[0] for c in STOP_CASES])
def test_choose_to_stop(nodes: tuple[Node, ...], count: int,
                        expected: list[tuple[str, str]]) -> None:
    chosen = choose_to_stop(nodes=nodes, app="hello", process="web", count=count)
    assert [(c.node, c.instance.instance_id) for c in chosen] == expected


def test_choose_to_stop_refuses_a_negative_count() -> None:
    with pytest.raises(BadPlacementRequest):
        choose_to_stop(nodes=(), app="hello", process="web", count=-1)


def big(n: int, *, full: set[int] = frozenset(), mem: int = 4096) -> tuple[Node, ...]:
    """`n` nodes node-00000...; those in `full` have no memory left."""
    return tuple(Node(name=f"node-{i:05d}", address=f"10.0.{i // 250}.{i % 250}", cpu=4.0,
                      memory_mb=0 if i in full else mem) for i in range(n))


def test_a_large_cluster_scores_a_limited_window_and_still_spreads() -> None:
    from paas.controller.scheduler import candidate_limit

    nodes = big(1000)
    plan = place(nodes=nodes, request=request(10))
    assert len(set(plan.placements)) == 10  # one per node
    assert candidate_limit(10) == 32 and candidate_limit(100) == 200
    # A scale-up starts where the app's placements did, so it sees its instances and avoids
    # those nodes.
    after = with_placements(nodes=nodes, request=request(10), plan=plan)
    more = place(nodes=after, request=request(10))
    assert not set(more.placements) & set(plan.placements)
    assert len(set(more.placements)) == 10
    # Deterministic: the same input, the same plan; another app starts elsewhere.
    assert place(nodes=nodes, request=request(10)) == plan
    other = place(nodes=nodes, request=request(10, app="other"))
    assert set(other.placements) != set(plan.placements)


def test_when_few_nodes_fit_the_scan_goes_on_until_it_finds_them() -> None:
    nodes = big(500, full=set(range(0, 499)))  # only the last node has room
    plan = place(nodes=nodes, request=request(1))
    assert plan.placements == ("node-00499",)
    none_fit = place(nodes=big(300, full=set(range(300))), request=request(1))
    assert none_fit.unplaced == 1 and none_fit.reason == "insufficient memory on 300 nodes"


def test_with_placements_uses_the_plan_positions_and_falls_back_to_names() -> None:
    nodes = big(50)
    req = request(3)
    plan = place(nodes=nodes, request=req)
    assert len(plan.indices) == 3
    after = with_placements(nodes=nodes, request=req, plan=plan)
    reordered = tuple(reversed(nodes))  # the positions no longer match: found by name
    again = with_placements(nodes=reordered, request=req, plan=plan)
    counted = {n.name: len(n.instances) for n in after if n.instances}
    assert counted == {n.name: len(n.instances) for n in again if n.instances}
    assert sum(counted.values()) == 3
