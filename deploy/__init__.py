"""Kubernetes deployment of the code location (see deploy/README.md); not part of the installed package."""
