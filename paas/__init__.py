"""The PaaS controller, its scheduler, deployer and builder, and the `paas` CLI."""
