#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""Ansible module: manage a HashiCorp Vault AppRole and optionally issue a (wrapped) SecretID."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vault_approle
short_description: Manage a HashiCorp Vault AppRole and issue SecretIDs
version_added: "0.1.0"
description:
  - Creates, updates or deletes the AppRole at C(auth/<mount_point>/role/<name>) in HashiCorp Vault
    and returns its RoleID (read from C(auth/<mount_point>/role/<name>/role-id)).
  - The module reads the role first and writes only the settings that differ, so RV(ignore:changed) is honest.
    Only the options you set are compared. Values are normalised the way Vault stores them before comparing
    (durations as seconds so V(1h) equals V(3600), policy names in lower case and in any order, CIDR lists
    in any order and with or without C(/32)).
  - With O(issue_secret_id=true) it also issues a new SecretID at C(auth/<mount_point>/role/<name>/secret-id).
    With O(wrap_ttl) the SecretID is response-wrapped (C(X-Vault-Wrap-TTL)) and only the single-use wrapping
    token is returned. Hand that to the consumer, which unwraps it once (the fleetops.mcp Vault modules do
    this for an AppRole login given O(secret_id_wrapping_token)).
  - Issuing a SecretID always reports a change and is skipped in check mode.
  - Role names are case-insensitive in Vault and stored in lower case; the module uses the lower-case name.
author:
  - fleetops.mcp contributors (@fleetops)
extends_documentation_fragment:
  - fleetops.mcp.vault
  - fleetops.mcp.attributes
  - fleetops.mcp.attributes.action_group_vault
options:
  name:
    description:
      - Name of the AppRole. Letters, digits, space, V(-), V(_) and V(.) are allowed.
    type: str
    required: true
    aliases: [role_name]
  mount_point:
    description:
      - Mount point of the AppRole auth method that holds the role.
      - Independent of O(auth_mount_point), which is where this module itself logs in with O(auth_method=approle).
    type: str
    default: approle
  state:
    description:
      - V(present) creates or updates the role, V(absent) deletes it (and with it all its SecretIDs).
    type: str
    choices: [present, absent]
    default: present
  token_policies:
    description:
      - Policies of the tokens issued by logging in with this role.
      - Compared as a set of lower-case names.
    type: list
    elements: str
  token_ttl:
    description:
      - Initial TTL of tokens issued for this role, in seconds (V(3600)) or as a duration (V(1h), V(90m), V(7d)).
    type: raw
  token_max_ttl:
    description:
      - Maximum lifetime of tokens issued for this role, in seconds or as a duration. It must not be shorter
        than O(token_ttl).
    type: raw
  token_bound_cidrs:
    description:
      - CIDR blocks from which the issued tokens may be used.
    type: list
    elements: str
  secret_id_ttl:
    description:
      - Lifetime of the SecretIDs of this role, in seconds or as a duration. V(0) means they never expire.
    type: raw
  secret_id_num_uses:
    description:
      - How many logins each SecretID allows. V(0) means unlimited.
    type: int
  secret_id_bound_cidrs:
    description:
      - CIDR blocks from which the SecretIDs of this role may be used to log in.
    type: list
    elements: str
  issue_secret_id:
    description:
      - Issue a new SecretID for the role and return it as RV(secret_id), or as RV(wrapping_token) with O(wrap_ttl).
      - The task must run with C(no_log=true), otherwise the module fails before issuing anything. This keeps the
        credential out of the task output and logs while C(register) still receives it.
      - Requires O(state=present).
    type: bool
    default: false
  wrap_ttl:
    description:
      - Response-wrap the issued SecretID with this TTL (seconds or a duration such as V(5m)); only the wrapping
        token is returned.
      - Only with O(issue_secret_id=true).
    type: raw
  secret_id_metadata:
    description:
      - String key/value metadata attached to the issued SecretID and to the tokens it logs in to.
      - Vault writes it to its audit log in plaintext, so it must not contain secrets.
      - Only with O(issue_secret_id=true).
    type: dict
attributes:
  check_mode:
    support: full
    details: No SecretID is issued in check mode; the module still reports the change.
  diff_mode:
    support: full
    details: The diff shows the managed role settings only. SecretIDs and wrapping tokens never appear in it.
  platform:
    platforms: posix
notes:
  - RV(secret_id) and RV(wrapping_token) are credentials. The module refuses to issue them unless the task has
    C(no_log=true); C(register) the result and pass the value on with other C(no_log) tasks
    (for example M(ansible.builtin.copy) with O(ansible.builtin.copy#module:mode=0600)).
  - Ansible offers modules no way to mask one returned value while still handing it to C(register),
    which is why the whole task must be C(no_log).
"""

EXAMPLES = r"""
- name: AppRole for an MCP server host, tokens limited to the host's address
  fleetops.mcp.vault_approle:
    url: https://vault.example.com:8200
    token: "{{ vault_admin_token }}"
    name: "mcp-{{ inventory_hostname_short }}"
    token_policies: [mcp-server-reader]
    token_ttl: 1h
    token_max_ttl: 4h
    token_bound_cidrs: ["{{ ansible_default_ipv4.address }}/32"]
    secret_id_ttl: 10m
    secret_id_num_uses: 1
  delegate_to: localhost
  register: approle

- name: Issue a SecretID, response-wrapped for five minutes
  fleetops.mcp.vault_approle:
    url: https://vault.example.com:8200
    token: "{{ vault_admin_token }}"
    name: "mcp-{{ inventory_hostname_short }}"
    issue_secret_id: true
    wrap_ttl: 5m
    secret_id_metadata:
      host: "{{ inventory_hostname }}"
  delegate_to: localhost
  no_log: true
  register: issued

- name: Hand the role_id and the wrapping token to the host, readable by root only
  ansible.builtin.copy:
    dest: /etc/fleetops/vault-approle.json
    content: "{{ {'role_id': approle.role_id, 'wrapped_secret_id': issued.wrapping_token} | to_json }}"
    owner: root
    group: root
    mode: "0600"
  no_log: true

- name: Remove the AppRole of a decommissioned host
  fleetops.mcp.vault_approle:
    url: https://vault.example.com:8200
    token: "{{ vault_admin_token }}"
    name: mcp-old-host
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
name:
  description: The role name as Vault stores it (lower case).
  returned: always
  type: str
  sample: mcp-web01
mount_point:
  description: Mount point of the AppRole auth method.
  returned: success
  type: str
  sample: approle
state:
  description: The requested state.
  returned: success
  type: str
  sample: present
vault_path:
  description: The Vault API path of the role on success, or the path whose request failed on failure.
  returned: success, and on failure when known
  type: str
  sample: auth/approle/role/mcp-web01
role_id:
  description:
    - The RoleID of the role. It identifies the role and is not a secret on its own.
    - V(null) in check mode when the role does not exist yet.
  returned: when O(state=present)
  type: str
  sample: 6e6c7f0e-6b1e-4a0b-9d4f-3f3b0c1d2e4f
role:
  description:
    - The role settings as Vault reports them (TTLs in seconds). In check mode, the predicted settings.
  returned: when O(state=present)
  type: dict
  sample: {"token_policies": ["mcp-server-reader"], "token_ttl": 3600, "token_max_ttl": 14400, "secret_id_ttl": 600}
changed_fields:
  description: Names of the options whose values differed from Vault (all set options when the role is created).
  returned: success
  type: list
  elements: str
  sample: [token_ttl]
secret_id_issued:
  description: Whether a SecretID was issued in this run (V(false) in check mode).
  returned: when O(issue_secret_id=true)
  type: bool
secret_id:
  description:
    - The new SecretID. A credential; the module only returns it when the task runs with C(no_log=true).
  returned: when a SecretID was issued without O(wrap_ttl)
  type: str
secret_id_accessor:
  description: Accessor of the new SecretID, usable to look it up or destroy it without knowing it.
  returned: when a SecretID was issued
  type: str
secret_id_ttl:
  description: Lifetime of the new SecretID in seconds (V(0) means no expiry).
  returned: when a SecretID was issued without O(wrap_ttl)
  type: int
secret_id_num_uses:
  description: Number of logins the new SecretID allows (V(0) means unlimited).
  returned: when a SecretID was issued without O(wrap_ttl)
  type: int
wrapping_token:
  description:
    - Single-use response-wrapping token that wraps the new SecretID. A credential until unwrapped; the module
      only returns it when the task runs with C(no_log=true).
  returned: when a SecretID was issued with O(wrap_ttl)
  type: str
wrap_info:
  description: Details of the wrapping token (without the token itself).
  returned: when a SecretID was issued with O(wrap_ttl)
  type: dict
  contains:
    accessor:
      description: Accessor of the wrapping token.
      type: str
    ttl:
      description: TTL of the wrapping token in seconds.
      type: int
    creation_time:
      description: When Vault created the wrapping token.
      type: str
    creation_path:
      description: The API path whose response was wrapped.
      type: str
    wrapped_accessor:
      description: Accessor of the wrapped SecretID.
      type: str
error_class:
  description: >-
    Failure class, one of V(configuration), V(connection), V(timeout), V(tls), V(invalid_credentials),
    V(permission_denied), V(not_found), V(sealed), V(uninitialized), V(invalid_request), V(rate_limited),
    V(server_error) or V(unexpected).
  returned: failure
  type: str
  sample: sealed
http_status:
  description: HTTP status of the failing Vault response, when there was one.
  returned: failure, when known
  type: int
  sample: 503
"""

import ipaddress
import json
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetops.mcp.plugins.module_utils._vault import (
    VaultClient,
    VaultModuleError,
    duration_to_seconds,
    fail_module,
    path_segment,
    vault_argument_spec,
    vault_module_kwargs,
)

ROLE_NAME_RE = re.compile(r"^[A-Za-z0-9 ._-]+$")

# Managed role settings and how their values are normalised for comparison.
ROLE_FIELDS = (
    ("token_policies", "policies"),
    ("token_ttl", "duration"),
    ("token_max_ttl", "duration"),
    ("token_bound_cidrs", "cidrs"),
    ("secret_id_ttl", "duration"),
    ("secret_id_num_uses", "count"),
    ("secret_id_bound_cidrs", "cidrs"),
)
ROLE_FIELD_KINDS = dict(ROLE_FIELDS)
NO_LOG_REQUIRED = (
    "issue_secret_id=true returns a credential (the SecretID, or a wrapping token with wrap_ttl). Run this task "
    "with 'no_log: true' so it never reaches the task output or logs, and register the result to use it. "
    "Nothing was issued."
)

ARGUMENT_SPEC = vault_argument_spec(
    name=dict(type="str", required=True, aliases=["role_name"]),
    mount_point=dict(type="str", default="approle"),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    token_policies=dict(type="list", elements="str", no_log=False),
    token_ttl=dict(type="raw", no_log=False),
    token_max_ttl=dict(type="raw", no_log=False),
    token_bound_cidrs=dict(type="list", elements="str", no_log=False),
    secret_id_ttl=dict(type="raw", no_log=False),
    secret_id_num_uses=dict(type="int", no_log=False),
    secret_id_bound_cidrs=dict(type="list", elements="str", no_log=False),
    issue_secret_id=dict(type="bool", default=False, no_log=False),
    wrap_ttl=dict(type="raw"),
    secret_id_metadata=dict(type="dict", no_log=False),
)


# --------------------------------------------------------------------------- #
# Normalisation
# --------------------------------------------------------------------------- #


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [("%s" % item).strip() for item in value if ("%s" % item).strip()]


def _normalize_cidr(value, option):
    try:
        return "%s" % ipaddress.ip_network(("%s" % value).strip(), strict=False)
    except ValueError:
        raise VaultModuleError("%s: %r is not an IP address or CIDR block." % (option, value), "configuration") from None


def normalize_field(name, value):
    """Comparable form of one role setting, from the task or from Vault's answer."""
    kind = ROLE_FIELD_KINDS[name]
    if kind == "policies":
        return sorted(set(item.lower() for item in _as_list(value)))
    if kind == "cidrs":
        return sorted(set(_normalize_cidr(item, name) for item in _as_list(value)))
    if kind == "duration":
        return duration_to_seconds(value if value is not None else 0, name)
    try:
        count = int(value or 0)
    except (TypeError, ValueError):
        raise VaultModuleError("%s: %r is not a whole number." % (name, value), "configuration") from None
    if count < 0:
        raise VaultModuleError("%s: %r must not be negative." % (name, value), "configuration")
    return count


def desired_settings(params):
    """Normalised values of the role options the task set (unset options are not managed)."""
    desired = dict(
        (name, normalize_field(name, params[name])) for name, _kind in ROLE_FIELDS if params[name] is not None
    )
    ttl, max_ttl = desired.get("token_ttl"), desired.get("token_max_ttl")
    if ttl and max_ttl and ttl > max_ttl:
        raise VaultModuleError(
            "token_ttl (%ss) must not be longer than token_max_ttl (%ss)." % (ttl, max_ttl), "configuration"
        )
    return desired


def current_settings(role_data):
    """Normalised values of all managed settings from Vault's role data."""
    data = dict(role_data or {})
    if data.get("token_policies") is None and data.get("policies") is not None:
        data["token_policies"] = data["policies"]
    return dict((name, normalize_field(name, data.get(name))) for name, _kind in ROLE_FIELDS)


def write_payload(params, fields):
    """Request body for ``auth/<mount>/role/<name>`` with the given fields (durations as seconds)."""
    payload = {}
    for name in fields:
        kind = ROLE_FIELD_KINDS[name]
        if kind == "duration":
            payload[name] = duration_to_seconds(params[name], name)
        elif kind in ("policies", "cidrs"):
            payload[name] = _as_list(params[name])
        else:
            payload[name] = int(params[name])
    return payload


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #


def validate_request(module):
    """Check option combinations before contacting Vault; returns ``(name, mount, role path, wrap seconds)``."""
    params = module.params
    name = (params["name"] or "").strip().lower()
    if not ROLE_NAME_RE.match(name):
        raise VaultModuleError(
            "Invalid AppRole name %r: use letters, digits, space, '-', '_' and '.'." % params["name"], "configuration"
        )
    mount = path_segment(params["mount_point"], "mount_point")
    issue = params["issue_secret_id"]
    if not issue:
        for option in ("wrap_ttl", "secret_id_metadata"):
            if params[option] is not None:
                raise VaultModuleError("%s applies only with issue_secret_id=true." % option, "configuration")
    if issue and params["state"] == "absent":
        raise VaultModuleError("issue_secret_id=true needs state=present.", "configuration")
    if issue and not module.no_log:
        raise VaultModuleError(NO_LOG_REQUIRED, "configuration")
    wrap_seconds = None
    if params["wrap_ttl"] is not None:
        wrap_seconds = duration_to_seconds(params["wrap_ttl"], "wrap_ttl")
        if wrap_seconds <= 0:
            raise VaultModuleError("wrap_ttl must be longer than zero seconds.", "configuration")
    for key, value in (params["secret_id_metadata"] or {}).items():
        if isinstance(value, (dict, list)):
            raise VaultModuleError(
                "secret_id_metadata.%s must be a string, not a %s." % (key, type(value).__name__), "configuration"
            )
    return name, mount, "auth/%s/role/%s" % (mount, path_segment(name, "role name")), wrap_seconds


# --------------------------------------------------------------------------- #
# Vault operations
# --------------------------------------------------------------------------- #


def read_role(client, name, path):
    """Vault's role data, or ``None`` when the role does not exist."""
    response = client.read(path, action="reading AppRole '%s'" % name)
    return None if response is None else (response.get("data") or {})


def read_role_id(client, name, path):
    """The RoleID of an existing role."""
    response = client.read(path + "/role-id", action="reading the RoleID of AppRole '%s'" % name) or {}
    return (response.get("data") or {}).get("role_id")


def issue_secret_id(client, name, path, metadata, wrap_seconds):
    """Issue a SecretID; returns the result keys (``secret_id*`` or ``wrapping_token``/``wrap_info``)."""
    secret_path = path + "/secret-id"
    payload = {}
    if metadata:
        payload["metadata"] = json.dumps(dict((str(k), str(v)) for k, v in metadata.items()))
    response = (
        client.write(secret_path, payload, action="issuing a SecretID for AppRole '%s'" % name, wrap_ttl=wrap_seconds)
        or {}
    )
    if wrap_seconds:
        return _wrapped_result(response, secret_path)
    data = response.get("data") or {}
    if not data.get("secret_id"):
        raise VaultModuleError(
            "Vault's answer at Vault path '%s' contained no SecretID." % secret_path, "unexpected", secret_path
        )
    return dict(
        secret_id=data["secret_id"],
        secret_id_accessor=data.get("secret_id_accessor"),
        secret_id_ttl=data.get("secret_id_ttl"),
        secret_id_num_uses=data.get("secret_id_num_uses"),
    )


def _wrapped_result(response, secret_path):
    info = response.get("wrap_info") or {}
    if not info.get("token"):
        accessor = (response.get("data") or {}).get("secret_id_accessor") or "unknown"
        raise VaultModuleError(
            "Vault did not wrap its answer at Vault path '%s' although wrap_ttl was set (a proxy may drop the "
            "X-Vault-Wrap-TTL header). The unwrapped SecretID was discarded, not returned; destroy it with its "
            "accessor %s." % (secret_path, accessor),
            "unexpected",
            secret_path,
        )
    details = dict(
        (key, info.get(key)) for key in ("accessor", "ttl", "creation_time", "creation_path", "wrapped_accessor")
    )
    return dict(wrapping_token=info["token"], wrap_info=details, secret_id_accessor=info.get("wrapped_accessor"))


# --------------------------------------------------------------------------- #
# Convergence
# --------------------------------------------------------------------------- #


def role_diff(path, before, after, issuing):
    """Diff of the managed settings only; never contains a SecretID."""
    after = dict(after)
    if issuing:
        after["new_secret_id"] = "(a new SecretID is issued; its value is never shown)"
    return dict(before=before, after=after, before_header="%s (in Vault)" % path, after_header="%s (requested)" % path)


def ensure_present(module, client, name, path, wrap_seconds):
    """Create or update the role (only differing settings), read its RoleID, optionally issue a SecretID."""
    params = module.params
    desired = desired_settings(params)
    role_data = read_role(client, name, path)
    existed = role_data is not None
    current = current_settings(role_data) if existed else {}
    if not existed:
        changed_fields = sorted(desired)
    else:
        changed_fields = sorted(field for field, value in desired.items() if current.get(field) != value)
    role_changed = not existed or bool(changed_fields)
    if role_changed and not module.check_mode:
        client.write(path, write_payload(params, changed_fields), action="writing AppRole '%s'" % name)
        role_data = read_role(client, name, path)
    elif role_changed:  # check mode: predict
        role_data = dict(role_data or {}, **desired)
    result = dict(
        changed=role_changed,
        changed_fields=changed_fields,
        role=role_data,
        # A role that check mode only pretends to create has no RoleID yet.
        role_id=read_role_id(client, name, path) if existed or not module.check_mode else None,
    )
    if params["issue_secret_id"]:
        result["changed"] = True
        result["secret_id_issued"] = not module.check_mode
        if not module.check_mode:
            result.update(issue_secret_id(client, name, path, params["secret_id_metadata"], wrap_seconds))
    if module._diff:
        before = dict((field, current[field]) for field in desired) if existed else {}
        result["diff"] = role_diff(path, before, desired, params["issue_secret_id"])
    return result


def ensure_absent(module, client, name, path):
    """Delete the role when it exists."""
    role_data = read_role(client, name, path)
    changed = role_data is not None
    if changed and not module.check_mode:
        client.delete(path, action="deleting AppRole '%s'" % name)
    result = dict(changed=changed, changed_fields=[])
    if module._diff:
        result["diff"] = role_diff(path, current_settings(role_data) if changed else {}, {}, False)
    return result


def run_module(module):
    """Validate, connect, converge; returns the result dict or fails the module."""
    params = module.params
    try:
        name, mount, path, wrap_seconds = validate_request(module)
        if params["state"] == "present":
            desired_settings(params)  # option errors before any request
    except VaultModuleError as exc:
        fail_module(module, exc, name=params["name"])
    client = VaultClient.from_module(module)
    result = error = None
    try:
        if params["state"] == "present":
            result = ensure_present(module, client, name, path, wrap_seconds)
        else:
            result = ensure_absent(module, client, name, path)
    except VaultModuleError as exc:
        error = exc
    finally:
        client.close()
    for warning in client.warnings:
        module.warn(warning)
    if error is not None:
        fail_module(module, error, name=name)
    result.update(name=name, mount_point=mount, state=params["state"], vault_path=path)
    return result


def main():
    """Module entry point."""
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, **vault_module_kwargs())
    module.exit_json(**run_module(module))


if __name__ == "__main__":
    main()
