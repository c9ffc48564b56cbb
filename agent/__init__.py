"""The node agent: runs a node's assigned instances as Docker containers and registers them in Consul."""
