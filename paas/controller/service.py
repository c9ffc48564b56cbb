"""The controller as one object: its collaborators, each with explicit typed dependencies,
wired once here. The HTTP edge (`paas.controller.api`) calls them through `app[CONTROLLER]`.

| collaborator | module | does |
| --- | --- | --- |
| `apps` | `apps.py` | apps, host names and route keys, config vars |
| `releases` | `releases.py` | building, listing, publishing and promoting releases |
| `deployments` | `deployments.py` | starting, resuming, cancelling and reading deployments |
| `deployer` | `deployer.py` | the deploy state machine one deployment runs |
| `nodes` | `nodes.py` | agents' registration, heartbeats, assignments; drains; the reconcile between deployments |
| `placements` | `placements.py` | what the controller placed, published for the router (`paas/placed/<app>`) |
| `certs` | `certs.py` | apps' certificates: the cluster CA's, the user's; sealed keys published for the router |

Each operation checks everything it is given before it changes anything, and raises
`paas.errors` types that the API maps to statuses. A change that must be atomic is one store
call, so one transaction (a release with the app's new config vars; a deployment that is
refused while another runs); the steps of a deployment are separate transactions by design,
each safe to run again after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web

from paas.consul import ConsulClient
from paas.controller.apps import Apps
from paas.controller.acme import Acme, AcmeSettings
from paas.controller.certs import Certificates, ClusterTls
from paas.controller.placements import Placements
from paas.controller.deployer import Deployer
from paas.controller.deployments import Deployments
from paas.controller.engine import Engine
from paas.controller.longpoll import AssignmentWaiters
from paas.controller.metrics import Metrics
from paas.controller.nodes import Heartbeats, Nodes
from paas.controller.probes import (AgentLogs, AgentLooks, ContainerTests, LoopClock,
                                    RouterStatus)
from paas.controller.releases import Releases
from paas.controller.settings import ControllerSettings
from paas.controller.store import Store
from paas.controller.tokens import Tokens


@dataclass(frozen=True, kw_only=True)
class Controller:
    settings: ControllerSettings
    store: Store
    tokens: Tokens
    session: aiohttp.ClientSession
    consul: ConsulClient
    metrics: Metrics
    apps: Apps
    releases: Releases
    deployments: Deployments
    nodes: Nodes
    certs: Certificates
    placements: Placements

    @classmethod
    def assemble(cls, *, settings: ControllerSettings, store: Store, tokens: Tokens,
                 waiters: AssignmentWaiters, session: aiohttp.ClientSession) -> "Controller":
        metrics = Metrics()
        consul = ConsulClient(settings.consul_url)
        clock = LoopClock()
        engine = Engine(url=settings.docker_url)
        heartbeats = Heartbeats(down_after=settings.node_down_after)
        releases = Releases(settings=settings, store=store, engine=engine, consul=consul,
                            metrics=metrics)
        deployer = Deployer(
            store=store, settings=settings, health=consul,
            router=RouterStatus(session=session, url=settings.router_url,
                                grace=settings.drain_grace, clock=clock),
            logs=AgentLogs(store=store, session=session, join_token=tokens.join),
            looks=AgentLooks(store=store, session=session, join_token=tokens.join),
            tests=ContainerTests(engine=engine), clock=clock,
            node_is_ready=heartbeats.is_ready, promote=releases.mark_stable,
            publish=releases.publish)
        deployments = Deployments(settings=settings, store=store, deployer=deployer,
                                  metrics=metrics)
        acme = Acme(AcmeSettings(directory=settings.acme_directory,
                                 account_key=settings.tls_dir / "acme-account.key",
                                 email=settings.acme_email, ca_bundle=settings.acme_ca_bundle),
                    consul=consul, session=session, router_url=settings.router_url) \
            if settings.acme_directory and settings.tls_dir else None
        certs = Certificates(store=store, consul=consul, domain=settings.domain,
                             tls=ClusterTls.load(settings.tls_dir) if settings.tls_dir else None,
                             acme=acme)
        return cls(settings=settings, store=store, tokens=tokens, session=session,
                   consul=consul, metrics=metrics, releases=releases, deployments=deployments,
                   apps=Apps(settings=settings, store=store, consul=consul, releases=releases,
                             deployments=deployments, certs=certs), certs=certs,
                   placements=Placements(store=store, consul=consul, cluster=settings.cluster),
                   nodes=Nodes(store=store, waiters=waiters, heartbeats=heartbeats,
                               deployments=deployments, metrics=metrics))


CONTROLLER = web.AppKey("controller", Controller)
