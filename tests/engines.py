"""What a test marked `docker` says when an engine it needs is missing. It fails, never skips:
`make test` installs and starts them all (scripts/setup.sh), so a missing one is a broken setup
that a skip would hide, and `make test-quick` leaves these tests out anyway."""

import pytest

from paas.localcluster import ClusterError, find_consul

SETUP = ("`make test` installs and starts it (scripts/setup.sh); a test marked `docker` fails "
         "without it instead of skipping")


def consul_binary() -> str:
    """The consul binary `make test` installed; the test fails without one."""
    try:
        return find_consul()
    except ClusterError:
        pytest.fail(f"no consul binary (PATH or .local/bin/consul); {SETUP}")
