#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""Ansible module: manage a HashiCorp Vault ACL policy idempotently."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vault_policy
short_description: Manage a HashiCorp Vault ACL policy
version_added: "0.1.0"
description:
  - Creates, updates or deletes the ACL policy at C(sys/policies/acl/<name>) in HashiCorp Vault.
  - The module reads the policy first and writes only when the text differs, so RV(ignore:changed) is honest.
    Texts are compared after normalising line endings, trailing whitespace on each line and leading
    or trailing blank lines.
  - Policy names are case-insensitive in Vault and stored in lower case; the module uses the lower-case name.
  - Use M(community.hashi_vault.vault_kv2_get) and the C(community.hashi_vault) lookups to read secrets;
    this module only manages policies.
author:
  - fleetops.mcp contributors (@fleetops)
extends_documentation_fragment:
  - fleetops.mcp.vault
  - fleetops.mcp.attributes
  - fleetops.mcp.attributes.action_group_vault
options:
  name:
    description:
      - Name of the ACL policy. It must not contain V(/).
      - The built-in V(root) policy cannot be managed and the built-in V(default) policy cannot be deleted.
    type: str
    required: true
  policy:
    description:
      - The policy document (HCL or JSON), for example from C(lookup('ansible.builtin.file', 'mcp-reader.hcl')).
      - Required when O(state=present).
      - Policy text is not secret; it is shown in diffs and returned as RV(policy).
    type: str
  state:
    description:
      - V(present) creates or updates the policy, V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Let MCP servers read their own secrets
  fleetops.mcp.vault_policy:
    url: https://vault.example.com:8200
    ca_cert: /etc/pki/fleetops/vault-ca.pem
    token: "{{ vault_admin_token }}"
    name: mcp-server-reader
    policy: |
      path "secret/data/mcp/{{ mcp_server_name }}/*" {
        capabilities = ["read"]
      }

- name: Same, authenticating with a response-wrapped AppRole SecretID
  fleetops.mcp.vault_policy:
    url: https://vault.example.com:8200
    auth_method: approle
    role_id: "{{ deployer_role_id }}"
    secret_id_wrapping_token: "{{ deployer_wrapped_secret_id }}"
    name: mcp-server-reader
    policy: "{{ lookup('ansible.builtin.file', 'policies/mcp-server-reader.hcl') }}"

- name: Remove a policy that is no longer used
  fleetops.mcp.vault_policy:
    name: legacy-mcp
    state: absent
  environment:
    VAULT_ADDR: https://vault.example.com:8200
    VAULT_TOKEN: "{{ vault_admin_token }}"
"""

RETURN = r"""
name:
  description: The policy name as Vault stores it (lower case).
  returned: always
  type: str
  sample: mcp-server-reader
state:
  description: The requested state.
  returned: success
  type: str
  sample: present
vault_path:
  description: The Vault API path of the policy on success, or the path whose request failed on failure.
  returned: success, and on failure when known
  type: str
  sample: sys/policies/acl/mcp-server-reader
policy:
  description: The policy text the module ensured (as given in O(policy)).
  returned: when O(state=present)
  type: str
  sample: "path \"secret/data/mcp/*\" {\n  capabilities = [\"read\"]\n}"
error_class:
  description: >-
    Failure class, one of V(configuration), V(connection), V(timeout), V(tls), V(invalid_credentials),
    V(permission_denied), V(not_found), V(sealed), V(uninitialized), V(invalid_request), V(rate_limited),
    V(server_error) or V(unexpected).
  returned: failure
  type: str
  sample: permission_denied
http_status:
  description: HTTP status of the failing Vault response, when there was one.
  returned: failure, when known
  type: int
  sample: 403
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetops.mcp.plugins.module_utils._vault import (
    VaultClient,
    VaultModuleError,
    fail_module,
    path_segment,
    vault_argument_spec,
    vault_module_kwargs,
)

POLICY_PATH = "sys/policies/acl/%s"

ARGUMENT_SPEC = vault_argument_spec(
    name=dict(type="str", required=True),
    policy=dict(type="str"),
    state=dict(type="str", default="present", choices=["present", "absent"]),
)


def normalize_policy(text):
    """Policy text with LF line endings, no trailing whitespace per line and no leading/trailing blank lines."""
    lines = [line.rstrip() for line in (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def policy_target(name, state, policy):
    """Validate the request; return ``(lower-case name, API path)`` or raise VaultModuleError."""
    name = (name or "").strip().lower()
    segment = path_segment(name, "policy name")
    if name == "root":
        raise VaultModuleError("The built-in 'root' policy cannot be created, changed or deleted.", "configuration")
    if name == "default" and state == "absent":
        raise VaultModuleError("The built-in 'default' policy cannot be deleted (it can be updated).", "configuration")
    if state == "present" and not normalize_policy(policy):
        raise VaultModuleError("The policy option is empty: give the HCL or JSON policy document.", "configuration")
    return name, POLICY_PATH % segment


def read_policy(client, name, path):
    """The stored policy text, or ``None`` when the policy does not exist."""
    response = client.read(path, action="reading ACL policy '%s'" % name)
    if response is None:
        return None
    data = response.get("data") or {}
    text = data.get("policy", response.get("policy"))
    return text if text is not None else ""


def policy_diff(path, before, after):
    """Ansible diff of the normalised policy texts (policy text is not secret)."""

    def as_text(text):
        return normalize_policy(text) + "\n" if text is not None else ""

    return dict(
        before=as_text(before),
        after=as_text(after),
        before_header="%s (in Vault)" % path,
        after_header="%s (requested)" % path,
    )


def ensure_policy(module, client, name, path):
    """Converge the policy; returns the result dict."""
    state = module.params["state"]
    desired = module.params["policy"] if state == "present" else None
    current = read_policy(client, name, path)
    if state == "present":
        changed = current is None or normalize_policy(current) != normalize_policy(desired)
        if changed and not module.check_mode:
            client.write(path, {"policy": desired}, action="writing ACL policy '%s'" % name)
    else:
        changed = current is not None
        if changed and not module.check_mode:
            client.delete(path, action="deleting ACL policy '%s'" % name)
    result = dict(changed=changed, name=name, state=state, vault_path=path)
    if state == "present":
        result["policy"] = desired
    if module._diff:
        result["diff"] = policy_diff(path, current, desired)
    return result


def run_module(module):
    """Validate, connect, converge; returns the result dict or fails the module."""
    try:
        name, path = policy_target(module.params["name"], module.params["state"], module.params["policy"])
    except VaultModuleError as exc:
        fail_module(module, exc, name=module.params["name"])
    client = VaultClient.from_module(module)
    result = error = None
    try:
        result = ensure_policy(module, client, name, path)
    except VaultModuleError as exc:
        error = exc
    finally:
        client.close()
    for warning in client.warnings:
        module.warn(warning)
    if error is not None:
        fail_module(module, error, name=name)
    return result


def main():
    """Module entry point."""
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        **vault_module_kwargs(required_if=[("state", "present", ("policy",))])
    )
    module.exit_json(**run_module(module))


if __name__ == "__main__":
    main()
