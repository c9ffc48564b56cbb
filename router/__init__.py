"""The router: turns Consul's view of healthy instances into HAProxy configuration."""
