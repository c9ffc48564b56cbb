"""The controller's Docker engine: where releases are built, tagged and pushed, and where the
integration test runs. Connected on first use, so a controller starts (and serves everything
that does not build) while the engine is away."""

from __future__ import annotations

import docker
import docker.errors

from paas.errors import Unavailable


class Engine:
    def __init__(self, *, url: str = "") -> None:
        self._url = url
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        """The docker-py client; Unavailable when the engine cannot be reached."""
        if self._client is None:
            try:
                self._client = (docker.DockerClient(base_url=self._url) if self._url
                                else docker.from_env())
            except docker.errors.DockerException as exc:
                raise Unavailable(f"the Docker engine is not reachable: {exc}") from None
        return self._client
