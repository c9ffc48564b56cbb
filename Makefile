# The two commands a newcomer runs: `make demo` and `make test` (see README.md).
PY := .venv/bin/python
PYTEST := .venv/bin/pytest

.PHONY: setup demo down test test-quick bench clean

setup:
	@scripts/setup.sh

demo: setup
	@$(PY) -m paas.cli up --demo

down:
	@$(PY) -m paas.cli down

# Everything: unit, service, integration (Docker, Consul, HAProxy) and end-to-end scenarios.
test: setup
	$(PYTEST) -q -p no:cacheprovider

# The tests that need no Docker engine, Consul or HAProxy (tests/conftest.py enforces it), in
# well under a minute. `-m "not slow"` instead keeps the quick integration tests too.
# Needs only the virtualenv: it neither installs nor starts Docker, Consul or HAProxy.
test-quick: | $(PYTEST)
	$(PYTEST) -q -p no:cacheprovider -m "not docker"

# Every benchmark, one after the other, each as README shows it (bench/*: their own clusters;
# multihost needs root). Minutes; not part of `make test`.
BENCHES := scheduler route_propagation scrape_overhead latency_overhead tls_throughput zero_downtime node_loss reactions build first_push multihost
bench: setup
	@set -e; for b in $(BENCHES); do echo "== bench/$$b"; bench/$$b; done

$(PYTEST):
	@scripts/setup.sh
