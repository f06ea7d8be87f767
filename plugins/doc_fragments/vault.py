# -*- coding: utf-8 -*-
# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""Documentation fragment for the Vault connection and authentication options of fleetops.mcp modules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Options shared by the fleetops.mcp vault_* modules (see plugins/module_utils/_vault.py)."""

    DOCUMENTATION = r"""
options:
  url:
    description:
      - Address of the Vault server, for example V(https://vault.example.com:8200).
      - When not set, the E(VAULT_ADDR) environment variable of the module process is used.
        Modules run on the managed host, so this is that host's environment (use C(delegate_to) to run them elsewhere).
    type: str
  auth_method:
    description:
      - How to authenticate to Vault.
      - V(token) uses O(token).
      - V(approle) logs in at C(auth/<auth_mount_point>/login) with O(role_id) and O(secret_id),
        or with the secret_id unwrapped from O(secret_id_wrapping_token).
    type: str
    choices: [token, approle]
    default: token
  token:
    description:
      - Vault token for O(auth_method=token).
      - When not set, the E(VAULT_TOKEN) environment variable of the module process is used.
        The C(~/.vault-token) file is never read.
      - Never included in results or error messages.
    type: str
  role_id:
    description:
      - AppRole RoleID for O(auth_method=approle).
      - A RoleID identifies the role, like a user name; it is not masked in the output.
    type: str
  secret_id:
    description:
      - AppRole SecretID for O(auth_method=approle).
      - Never included in results or error messages.
      - Mutually exclusive with O(secret_id_wrapping_token).
    type: str
  secret_id_wrapping_token:
    description:
      - A response-wrapping token that wraps an AppRole SecretID, as returned by
        C(auth/<mount>/role/<name>/secret-id) called with C(X-Vault-Wrap-TTL)
        (for example by M(fleetops.mcp.vault_approle) with O(fleetops.mcp.vault_approle#module:wrap_ttl)).
      - The module unwraps it at C(sys/wrapping/unwrap) and logs in with the SecretID inside.
        A wrapping token works only once; an error saying it was already unwrapped means someone
        else may hold the SecretID.
      - Never included in results or error messages. Mutually exclusive with O(secret_id).
    type: str
  auth_mount_point:
    description:
      - Mount point of the AppRole auth method used for O(auth_method=approle) logins.
    type: str
    default: approle
  namespace:
    description:
      - Vault Enterprise namespace, sent as the C(X-Vault-Namespace) header on every request (login included).
      - When not set, the E(VAULT_NAMESPACE) environment variable of the module process is used.
    type: str
  ca_cert:
    description:
      - PEM file with the CA certificate(s) used to verify Vault's TLS certificate.
      - When not set, the E(VAULT_CACERT) environment variable of the module process is used,
        and otherwise the system trust store.
    type: path
  validate_certs:
    description:
      - Verify Vault's TLS certificate and host name.
      - Set to V(false) only for tests; this is insecure and the module warns about it.
    type: bool
    default: true
  client_cert:
    description:
      - PEM client certificate for mutual TLS. It may also contain the private key.
      - When not set, C(hvac) uses the E(VAULT_CLIENT_CERT) and E(VAULT_CLIENT_KEY) environment variables
        of the module process, if they are set.
    type: path
  client_key:
    description:
      - PEM private key for O(client_cert) when the key is not in the certificate file.
    type: path
  timeout:
    description:
      - Seconds to wait for each request to Vault (connect and read).
    type: int
    default: 30
requirements:
  - hvac (Python library) on the host that runs the module.
notes:
  - Failures carry an RV(error_class) of V(configuration), V(connection), V(timeout), V(tls),
    V(invalid_credentials), V(permission_denied), V(not_found), V(sealed), V(uninitialized),
    V(invalid_request), V(rate_limited), V(server_error) or V(unexpected), plus the Vault path involved.
    Error messages never contain tokens, SecretIDs or secret values.
  - HTTP proxies are taken from the usual E(HTTPS_PROXY)/E(NO_PROXY) environment variables of the module process.
"""
