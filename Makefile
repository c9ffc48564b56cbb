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

test: setup
	$(PYTEST) -q -p no:cacheprovider

test-quick: setup
	$(PYTEST) -q -p no:cacheprovider -m "not slow"
