"""Paygress: pay-per-use ingress. An Envoy ext_authz service that sells access for Cashu ecash."""

__version__ = "0.1.0"
