"""The agent's settings: one frozen dataclass, read by the shared loader at start.

Every field has its default and its help beside it (`paas.settings.setting`). The loader reads
flags, then `PAAS_AGENT_<FLAG NAME>` variables (`PAAS_AGENT_WAIT`; the repeatable `--label` is
`PAAS_AGENT_LABELS=k=v,k2=v2`), then the defaults, and writes `paas-agent --help` from the
fields; `AgentSettings.from_args(argv, environ)` is the one call that does it, so tests build
settings directly. The join token file, if any, is read by `read_join_token()` once when the
daemon starts.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from paas.consul import InvalidConsulUrl, check_url
from paas.settings import LOG_LEVELS, InvalidSetting, load, setting

PROG = "paas-agent"
ENV_PREFIX = "PAAS_AGENT_"
DESCRIPTION = ("Run the PaaS node agent: registers this node with the controller, runs its "
               "assigned instances in Docker and registers them in the local Consul agent.")

NODE_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")  # the controller's rule for node names
CLUSTER_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$")
LOCAL_DOCKER = "unix:///var/run/docker.sock"


def default_docker_url(environ: Mapping[str, str]) -> str:
    """DOCKER_HOST from the environment, else the local engine's unix socket."""
    return environ.get("DOCKER_HOST") or LOCAL_DOCKER


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    node: str = setting(
        default_factory=lambda: socket.gethostname().lower(), shown_default="the host name",
        help="Node name, unique in the cluster: lowercase letters, digits, '.', '-'.")
    address: str = setting(
        "127.0.0.1",
        "The node's address: containers publish here, Consul checks and the admin port use it.")
    controller_url: str = setting("http://127.0.0.1:7070", "Base URL of the controller's HTTP API.")
    join_token: str = setting(
        "", "Bearer token for the controller (prefer --join-token-file: it stays out of `ps`).")
    join_token_file: str = setting(
        "", "File holding the join token, read once at start; used when --join-token is empty.")
    consul_url: str = setting(
        "", "The local Consul agent.", shown_default="http://<address>:8500")
    cluster: str = setting(
        "local",
        "Cluster id: the `paas.localcluster` label, so several clusters can share one Docker "
        "engine.")
    cpu: float = setting(
        1.0, "Declared CPU capacity (cores) reported to the controller's scheduler.")
    memory_mb: int = setting(
        1024, "Declared memory capacity (MiB) reported to the controller's scheduler.")
    labels: Mapping[str, str] = setting(
        default_factory=dict, flag="label", env="LABELS",
        help="Node label for placement, e.g. zone=a.")
    admin_port: int = setting(7071, "Port on `address` serving GET /healthz and GET /metrics.")
    wait_s: float = setting(
        30.0, "Long-poll wait asked of the controller per assignments request, in seconds.",
        flag="wait")
    heartbeat_interval_s: float = setting(
        2.0, "Seconds between heartbeats.", flag="heartbeat-interval")
    reconcile_interval_s: float = setting(
        5.0, "Safety tick: reconcile at least this often, to notice crashed containers, in "
             "seconds.", flag="reconcile-interval")
    docker_url: str = setting(LOCAL_DOCKER, "Docker engine URL.", also_env=("DOCKER_HOST",))
    docker_init: bool = setting(
        True, "Run containers with Docker's init (tini) so the app gets SIGTERM and zombies are "
              "reaped.")
    log_level: str = setting("INFO", "Python logging level.", choices=LOG_LEVELS)

    def __post_init__(self) -> None:
        if not NODE_RE.fullmatch(self.node):
            raise InvalidSetting(
                "node", f"{self.node!r}: use lowercase letters, digits, '.' and '-'")
        if not CLUSTER_RE.fullmatch(self.cluster):
            raise InvalidSetting(
                "cluster", f"{self.cluster!r}: use lowercase letters, digits, '.', '_' and '-'")
        if not self.address:
            raise InvalidSetting("address", "must not be empty")
        for key in self.labels:
            if not LABEL_KEY_RE.fullmatch(key):
                raise InvalidSetting(
                    "labels", f"{key!r} is not a label key (letters, digits, '_', '.', '/', '-')")
        for name in ("wait_s", "heartbeat_interval_s", "reconcile_interval_s"):
            if getattr(self, name) <= 0:
                raise InvalidSetting(name, "must be positive")
        if not 0 < self.admin_port < 65536:
            raise InvalidSetting("admin_port", "must be a port number (1-65535)")
        try:
            check_url(self.effective_consul_url)
        except InvalidConsulUrl as exc:
            raise InvalidSetting("consul_url", str(exc)) from None

    @property
    def effective_consul_url(self) -> str:
        return (self.consul_url or f"http://{self.address}:8500").rstrip("/")

    @property
    def effective_docker_url(self) -> str:
        return self.docker_url or default_docker_url(os.environ)

    def read_join_token(self) -> str:
        """The join token: `join_token`, else the stripped content of `join_token_file`."""
        if self.join_token:
            return self.join_token
        if self.join_token_file:
            try:
                return Path(self.join_token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise InvalidSetting(
                    "join_token_file", f"cannot read {self.join_token_file} ({exc.strerror})"
                ) from None
        return ""

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> AgentSettings:
        """Settings from flags, `PAAS_AGENT_*` variables and defaults (default: the process's)."""
        return load(cls, prog=PROG, description=DESCRIPTION, env_prefix=ENV_PREFIX,
                    argv=argv, environ=environ)
