"""The scheduler: decides on which nodes new instances go, and which instances to stop when an
app scales down.

It is a pure function in the manner of Nomad's scheduler: it reads an immutable view of the
cluster (frozen dataclasses) and returns a plan; it does no I/O, reads no clock and draws no
random numbers, so the same input always gives the same plan. Only the controller applies plans
(it records the instances and bumps each node's assignment index).

Strategies:

- `spread` (default): each instance goes to the feasible node with the fewest instances of the
  same app and process type; ties go to the node with the least allocated share (the larger of
  its cpu and memory fractions), then to the first name in sort order.
- `binpack`: each instance goes to the most allocated feasible node, so that whole nodes stay free.

A node is feasible when it is ready, carries every label of the request's constraints, and has
room for one more instance: the sum of reservations stays within its cpu and memory capacity.

Cost: a scan that stops after `candidate_limit(count)` feasible nodes (max(32, 2 x count)),
from a place fixed by the app and process, as Nomad limits its candidates; then O(log k) per
placed instance. So a placement costs about the same on 5,000 nodes as on 1,000, unless few
nodes fit (then the scan goes on, to find them or to say why none fits).
"""

from __future__ import annotations

import heapq
import itertools
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

Strategy = Literal["spread", "binpack"]
STRATEGIES: tuple[str, ...] = ("spread", "binpack")

MIN_CANDIDATES = 32  # feasible nodes scored per request at least (Nomad scores a few, too)
# cpu is handled in integer millicores so that sums of fractions such as 0.1 compare exactly.
_MILLI = 1000

# The reasons a node cannot take one more instance, in the order they are checked.
NOT_READY = "node not ready"
CONSTRAINT_UNMET = "constraint unmet"
INSUFFICIENT_CPU = "insufficient cpu"
INSUFFICIENT_MEMORY = "insufficient memory"
_REASON_ORDER = (INSUFFICIENT_MEMORY, INSUFFICIENT_CPU, CONSTRAINT_UNMET, NOT_READY)


class BadPlacementRequest(ValueError):
    """The placement request or the cluster view is malformed: fix the input and ask again."""


def _millicores(cpu: float) -> int:
    return round(cpu * _MILLI)


@dataclass(frozen=True, kw_only=True)
class Instance:
    """An instance already allocated on a node (running, starting or draining)."""

    app: str
    process: str
    cpu: float
    memory_mb: int
    instance_id: str = ""


@dataclass(frozen=True, kw_only=True)
class Node:
    """A node as the scheduler sees it: its capacity, labels, readiness and current instances."""

    name: str
    address: str
    cpu: float
    memory_mb: int
    labels: Mapping[str, str] = field(default_factory=dict)
    ready: bool = True
    instances: tuple[Instance, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.instances, tuple):
            object.__setattr__(self, "instances", tuple(self.instances))
        if self.cpu < 0 or self.memory_mb < 0:
            raise BadPlacementRequest(f"node {self.name!r} has a negative capacity.")

    # The sums below are computed once per Node object (the object is immutable), so a cluster
    # view that is reused across many requests pays for them only once.
    @cached_property
    def usage(self) -> tuple[int, int, int, int, float, Counter[tuple[str, str]]]:
        """(cpu capacity in millicores, memory capacity, millicores used, memory used, share,
        count of instances per (app, process))."""
        cap_milli = _millicores(self.cpu)
        used_milli = sum(_millicores(i.cpu) for i in self.instances)
        used_mem = sum(i.memory_mb for i in self.instances)
        share = _share(used_milli, cap_milli, used_mem, self.memory_mb)
        counts = Counter((i.app, i.process) for i in self.instances)
        return cap_milli, self.memory_mb, used_milli, used_mem, share, counts


@dataclass(frozen=True, kw_only=True)
class PlacementRequest:
    """Place `count` new instances of one app's process type, each reserving cpu and memory."""

    app: str
    process: str
    count: int
    cpu: float
    memory_mb: int
    constraints: Mapping[str, str] = field(default_factory=dict)
    strategy: Strategy = "spread"

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise BadPlacementRequest("the instance count must be a whole number of 0 or more.")
        if self.cpu < 0 or self.memory_mb < 0:
            raise BadPlacementRequest("cpu and memory per instance must not be negative.")
        if self.strategy not in STRATEGIES:
            raise BadPlacementRequest(
                f"unknown placement strategy {self.strategy!r}: use 'spread' or 'binpack'."
            )


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Where the new instances go: one node name per placed instance, in placement order.

    `unplaced` instances found no node; `reason` then says why each node was ruled out, e.g.
    "insufficient memory on 3 nodes, constraint unmet on 2 nodes, node not ready on 1 node"
    (empty when every instance was placed).
    """

    placements: tuple[str, ...]
    unplaced: int = 0
    reason: str = ""
    indices: tuple[int, ...] = field(default=(), compare=False, repr=False)
    """Where each placement's node sits in the view it was planned on (`with_placements`
    uses it to skip a scan of every node)."""


@dataclass(frozen=True, kw_only=True)
class StopChoice:
    """One instance to stop when scaling down."""

    node: str
    instance: Instance


def _share(used_milli: int, cap_milli: int, used_mem: int, cap_mem: int) -> float:
    """The dominant allocated fraction of a node (0.0 empty, 1.0 full)."""
    cpu = used_milli / cap_milli if cap_milli else (1.0 if used_milli else 0.0)
    mem = used_mem / cap_mem if cap_mem else (1.0 if used_mem else 0.0)
    return cpu if cpu > mem else mem


def _describe(reasons: Counter[str], *, node_count: int) -> str:
    if node_count == 0:
        return "no nodes are registered"
    parts = sorted(reasons.items(), key=lambda kv: (-kv[1], _REASON_ORDER.index(kv[0])))
    return ", ".join(f"{reason} on {n} node{'s' if n != 1 else ''}" for reason, n in parts)


def candidate_limit(count: int) -> int:
    """How many feasible nodes a request scores: enough for each instance to have a choice."""
    return max(MIN_CANDIDATES, 2 * count)


def _start(request: PlacementRequest, n: int) -> int:
    """Where the scan of the nodes begins for this app and process: fixed (no randomness, the
    plan stays a function of its input) and different across apps, so their instances spread
    over the cluster; a scale-up starts where the app's earlier placements did."""
    return zlib.crc32(f"{request.app}/{request.process}".encode()) % n if n else 0


def place(*, nodes: Sequence[Node], request: PlacementRequest) -> Plan:
    """Plan where `request.count` new instances go on `nodes`, following the request's strategy.

    Existing instances on each node count against its capacity and, for `spread`, towards the
    number of instances of the same app and process it already holds.

    Like Nomad's limit iterator, it does not score every node: it scans the nodes in a rotating
    order from a place fixed by the app and process, and stops once it has `candidate_limit`
    feasible ones; the strategy then picks among those. A cluster no larger than that is scanned
    whole (as is any cluster where fewer nodes fit), so the plan is the best over every node.
    Node names must be unique; the scanned ones are checked.
    """
    if request.count == 0:
        return Plan(placements=())
    need_milli = _millicores(request.cpu)
    need_mem = request.memory_mb
    constraints = tuple(request.constraints.items())
    key = (request.app, request.process)
    spread = request.strategy == "spread"
    reasons: Counter[str] = Counter()
    limit = candidate_limit(request.count)
    total = len(nodes)
    first = _start(request, total)
    seen: set[str] = set()

    # This loop runs once per scanned node, so it is kept flat. Heap entries end with the
    # node's index so that ties never compare further.
    heap: list[tuple] = []
    for index in itertools.chain(range(first, total), range(first)):
        node = nodes[index]
        if node.name in seen:
            raise BadPlacementRequest("node names must be unique in the cluster view.")
        seen.add(node.name)
        if not node.ready:
            reasons[NOT_READY] += 1
            continue
        if constraints:
            labels = node.labels
            if any(labels.get(k) != v for k, v in constraints):
                reasons[CONSTRAINT_UNMET] += 1
                continue
        cap_milli, cap_mem, used_milli, used_mem, share, counts = node.usage
        if used_mem + need_mem > cap_mem:
            reasons[INSUFFICIENT_MEMORY] += 1
        elif used_milli + need_milli > cap_milli:
            reasons[INSUFFICIENT_CPU] += 1
        else:
            if spread:
                heap.append((counts[key] if key in counts else 0, share, node.name, index))
            else:
                heap.append((-share, node.name, index))
            if len(heap) >= limit:
                break
    heapq.heapify(heap)

    # Usage of the nodes placed on so far: index -> [millicores, memory, same-app count].
    placed_on: dict[int, list[int]] = {}
    placements: list[str] = []
    indices: list[int] = []
    while len(placements) < request.count and heap:
        index = heap[0][-1]
        node = nodes[index]
        cap_milli, cap_mem, used_milli, used_mem, _, _ = node.usage
        used = placed_on.get(index)
        if used is None:
            used = placed_on[index] = [used_milli, used_mem, heap[0][0] if spread else 0]
        used[0] += need_milli
        used[1] += need_mem
        used[2] += 1
        placements.append(node.name)
        indices.append(index)
        if used[1] + need_mem > cap_mem:
            # Full for this request: usage only grows while planning it, so it never fits again.
            reasons[INSUFFICIENT_MEMORY] += 1
            heapq.heappop(heap)
        elif used[0] + need_milli > cap_milli:
            reasons[INSUFFICIENT_CPU] += 1
            heapq.heappop(heap)
        else:
            share = _share(used[0], cap_milli, used[1], cap_mem)
            entry = (used[2], share, node.name, index) if spread else (-share, node.name, index)
            heapq.heapreplace(heap, entry)

    unplaced = request.count - len(placements)
    if not unplaced:
        return Plan(placements=tuple(placements), indices=tuple(indices))
    return Plan(
        placements=tuple(placements),
        unplaced=unplaced,
        reason=_describe(reasons, node_count=len(nodes)),
        indices=tuple(indices),
    )


def with_placements(
    *, nodes: Sequence[Node], request: PlacementRequest, plan: Plan,
    instance_ids: Iterable[str] | None = None,
) -> tuple[Node, ...]:
    """Return the cluster view after `plan` is applied: new Node objects hold the new instances.

    Nodes without a placement are returned as the same objects, so their cached sums are kept.
    """
    ids = list(instance_ids) if instance_ids is not None else [""] * len(plan.placements)
    if len(ids) != len(plan.placements):
        raise BadPlacementRequest("give exactly one instance id per placement.")
    added: dict[str, list[Instance]] = {}
    for node_name, instance_id in zip(plan.placements, ids):
        added.setdefault(node_name, []).append(Instance(
            app=request.app, process=request.process, cpu=request.cpu,
            memory_mb=request.memory_mb, instance_id=instance_id,
        ))
    result = list(nodes)
    known = len(plan.indices) == len(plan.placements) and all(
        0 <= i < len(result) and result[i].name == name
        for i, name in zip(plan.indices, plan.placements))
    positions = (dict(zip(plan.placements, plan.indices)) if known else
                 {node.name: i for i, node in enumerate(result) if node.name in added})
    for name, extra in added.items():
        if name not in positions:
            continue
        node = result[positions[name]]
        result[positions[name]] = Node(
            name=node.name, address=node.address, cpu=node.cpu, memory_mb=node.memory_mb,
            labels=node.labels, ready=node.ready, instances=node.instances + tuple(extra),
        )
    return tuple(result)


def choose_to_stop(
    *, nodes: Sequence[Node], app: str, process: str, count: int
) -> tuple[StopChoice, ...]:
    """Pick `count` instances of `app`/`process` to stop when scaling down, in stop order.

    Instances on nodes that are not ready go first (they are likely lost already); then each
    pick comes from the node holding the most instances of that app and process, ties going to
    the most allocated node, then to the first name. On a node, the instance listed last (the
    newest, as the controller lists them oldest first) goes first. Returns fewer than `count`
    choices when fewer instances exist.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise BadPlacementRequest("the number of instances to stop must be 0 or more.")
    key = (app, process)
    candidates: list[list[Instance]] = []
    usage: list[list[int]] = []
    caps: list[tuple[int, int]] = []
    heap: list[tuple] = []
    for node in nodes:
        mine = [i for i in node.instances if (i.app, i.process) == key]
        if not mine:
            continue
        index = len(candidates)
        candidates.append(mine)
        cap_milli, cap_mem, used_milli, used_mem, share, _ = node.usage
        usage.append([used_milli, used_mem])
        caps.append((cap_milli, cap_mem))
        heap.append((node.ready, -len(mine), -share, node.name, index))
    heapq.heapify(heap)

    chosen: list[StopChoice] = []
    while len(chosen) < count and heap:
        ready, _, _, name, index = heap[0]
        instance = candidates[index].pop()
        chosen.append(StopChoice(node=name, instance=instance))
        if not candidates[index]:
            heapq.heappop(heap)
            continue
        used = usage[index]
        used[0] -= _millicores(instance.cpu)
        used[1] -= instance.memory_mb
        share = _share(used[0], caps[index][0], used[1], caps[index][1])
        heapq.heapreplace(heap, (ready, -len(candidates[index]), -share, name, index))
    return tuple(chosen)
