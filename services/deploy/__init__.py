"""Deployment helpers: Kubernetes manifests generated from the project's files, connector registration."""
