"""git push: the smart-HTTP endpoint the controller serves (git's own `http-backend`) and the
pre-receive hook that builds and deploys a pushed commit through the API."""
