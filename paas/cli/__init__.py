"""The `paas` command: every verb, the small HTTP client they share, and the local cluster's
`up`/`down`. `paas.cli.main` builds the parser and runs a verb."""
