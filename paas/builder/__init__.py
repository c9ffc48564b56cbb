"""Turning an app's source into a release image: build contexts (untrusted tar checked as a
stream), what the source declares (Procfile, paas.toml), the builder, and the one-off
container that runs the app's integration test."""
