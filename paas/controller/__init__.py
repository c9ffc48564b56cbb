"""The controller daemon: the HTTP API, the SQLite store, the deploy state machine and the
loops that keep the cluster as the store says. See docs/architecture.md for the layout."""
