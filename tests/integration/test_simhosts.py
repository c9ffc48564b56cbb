"""Simulated hosts (tests/simhosts.py) are separate machines as far as Docker and the network
go: each engine has only its own images, an image reaches a node through a registry on the
server, and a container published on a node's address answers the server, not the engine's
own host."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.simhosts import GATEWAY, SimNetwork, clear_leftovers
from tests.waiting import wait_until

pytestmark = pytest.mark.docker
BUSYBOX = "paas/busybox:latest"


@pytest.fixture(scope="module")
def net() -> Iterator[SimNetwork]:
    clear_leftovers()
    with SimNetwork(root=Path(tempfile.mkdtemp(prefix="paas-simhosts-")), count=2) as network:
        yield network


def load(image: str, into: docker.APIClient) -> None:
    """`docker save | docker load` from this machine's engine."""
    saved = subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
    into.load_image(saved)


def fetch(where, url: str) -> str:
    """GET `url` from a host (`where` wraps an argv to run there); "" when it fails."""
    argv = where([sys.executable, "-c", "import sys, urllib.request; sys.stdout.write("
                  "urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())", url])
    return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout


def test_separate_engines_a_registry_between_them_and_a_private_network(net) -> None:
    server, node = net.hosts
    s, n = server.engine(), node.engine()
    roots = {e.info()["DockerRootDir"] for e in (s, n, docker.APIClient(version="auto"))}
    assert len(roots) == 3, roots  # three engines, three image stores
    load(BUSYBOX, s)
    assert not n.images(name=BUSYBOX), "a fresh host has no image"

    # A registry on the server (Debian's docker-registry), in the server's namespace.
    config = server.root / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: "
                      f"{server.root / 'registry'}\nhttp:\n  addr: {server.address}:5000\n")
    registry = subprocess.Popen(server.argv(["docker-registry", "serve", str(config)]),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ref = f"{server.address}:5000/sim/busybox"
        s.tag(BUSYBOX, ref, "v1")
        wait_until(lambda: "error" not in s.push(ref, tag="v1"), 20, 0.2,
                   what="the push to the server's registry")
        n.pull(ref, tag="v1")
        assert n.images(name=ref)

        # On the node, published on the node's own address.
        container = n.create_container(
            f"{ref}:v1", command=["sh", "-c", "echo hi > /tmp/i; exec httpd -f -p 80 -h /tmp"],
            ports=[80], host_config=n.create_host_config(port_bindings={80: (node.address, 8081)}))
        n.start(container)
        url = f"http://{node.address}:8081/i"
        wait_until(lambda: fetch(server.argv, url) == "hi\n", 20, 0.2,
                   what="the server reaching the node's container")
        # The test's own way in (the gateway, on that network only) reaches it too.
        assert GATEWAY.startswith("198.18.0.") and fetch(lambda argv: argv, url) == "hi\n"

        # A pulled cable cuts the node off; put back, it answers again.
        node.cable(plugged=False)
        assert fetch(server.argv, url) == ""
        node.cable(plugged=True)
        wait_until(lambda: fetch(server.argv, url) == "hi\n", 20, 0.2,
                   what="the node reachable again once plugged back")
    finally:
        registry.terminate()
        registry.wait(10)
        s.close()
        n.close()
