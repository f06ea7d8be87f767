"""A test double of the HashiCorp Vault HTTP API for the fleetops.mcp unit tests.

This package is NOT HashiCorp Vault. See :mod:`.vault_api_double` for what the
double covers and what it leaves out.
"""
