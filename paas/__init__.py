"""The PaaS: the controller (`paas.controller`), the build step (`paas.builder`), git push
(`paas.git`), the `paas` command (`paas.cli`), the local cluster (`paas.localcluster`) and the
shared kernel every daemon uses (the top-level modules). docs/architecture.md has the layout."""
