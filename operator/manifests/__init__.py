"""Pure manifest builders: a validated ModelService (and the operator's config) in, a
Kubernetes object as a dict out. Nothing here talks to the cluster."""
