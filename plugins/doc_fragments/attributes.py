# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""Documentation fragments for the attributes of the fleetops.mcp modules.

In the style of ansible-core's ``action_common_attributes``: a fragment gives
each attribute's description, and every module states its own ``support``
(and the ``platforms`` of ``platform``) in its own ``attributes``, which
ansible-doc merges over the fragment's.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Attributes shared by the fleetops.mcp modules."""

    # check_mode, diff_mode and platform: every module (fleetops.mcp.attributes).
    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check mode and return a changed status prediction without modifying the target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
"""

    # The modules of meta/runtime.yml's action group "mcp" (fleetops.mcp.attributes.action_group_mcp).
    ACTION_GROUP_MCP = r"""
attributes:
  action_group:
    description: Use C(group/fleetops.mcp.mcp) in C(module_defaults) to set common options such as the TLS settings once.
    support: full
    membership:
      - fleetops.mcp.mcp
"""

    # The modules of meta/runtime.yml's action group "vault" (fleetops.mcp.attributes.action_group_vault).
    ACTION_GROUP_VAULT = r"""
attributes:
  action_group:
    description: Use C(group/fleetops.mcp.vault) in C(module_defaults) to set the connection options once.
    support: full
    membership:
      - fleetops.mcp.vault
"""
