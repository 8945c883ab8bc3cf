"""Ray Serve deployments: the HTTP API and the deployment graph of a fleet."""
