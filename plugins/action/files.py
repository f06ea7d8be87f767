# -*- coding: utf-8 -*-
# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""Action plugin of fleetops.mcp.files: render templates and read role files on the controller.

Each entry with ``template`` is rendered as ansible.builtin.template renders it
(the role's and the play's search paths, ``ansible_managed`` and the
``template_*`` variables, trim_blocks), with the entry's own ``vars`` on top
(what a loop's ``item`` was to a template task); each entry with ``src`` is read from the
role's ``files/``. Both become the entry's ``content`` (``secret_content`` with
``secret: true``), and the module applies every entry in one remote call.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

try:  # ansible-core 2.19 and later
    from ansible.template import trust_as_template
except ImportError:  # pragma: no cover - older cores are not supported (meta/runtime.yml), kept for a clear error
    trust_as_template = None

try:
    from ansible._internal._templating._template_vars import generate_ansible_template_vars
except ImportError:  # pragma: no cover - where a later core moves it
    from ansible.template import generate_ansible_template_vars  # type: ignore[no-redef]

_MODULE = "fleetops.mcp.files"
_ENTRY_KEYS = frozenset(
    ["path", "state", "content", "secret_content", "template", "src", "secret", "vars", "owner", "group", "mode", "validate"]
)


class ActionModule(ActionBase):
    """Resolve ``template`` and ``src`` entries, then run the module once."""

    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        super(ActionModule, self).run(tmp, task_vars)
        del tmp

        entries = self._task.args.get("files")
        unknown = sorted(set(self._task.args) - {"files"})
        if unknown:
            raise AnsibleActionFail("fleetops.mcp.files: unsupported option(s) %s; it takes only files" % ", ".join(unknown))
        if not isinstance(entries, list) or not entries:
            raise AnsibleActionFail("files: must be a non-empty list of entries (path, state, mode, ...)")

        resolved = []
        for index, entry in enumerate(entries):
            resolved.append(self._resolve(index, entry, task_vars))

        return self._execute_module(module_name=_MODULE, module_args={"files": resolved}, task_vars=task_vars)

    def _resolve(self, index, entry, task_vars):
        if not isinstance(entry, dict):
            raise AnsibleActionFail("files[%d]: must be a mapping with path and mode, not %r" % (index, type(entry).__name__))
        where = "files[%d] (%s)" % (index, entry.get("path"))
        unknown = sorted(set(entry) - _ENTRY_KEYS)
        if unknown:
            raise AnsibleActionFail("%s: unsupported key(s) %s" % (where, ", ".join(unknown)))
        sources = [key for key in ("content", "secret_content", "template", "src") if entry.get(key) is not None]
        if len(sources) > 1:
            raise AnsibleActionFail(
                "%s: give one of content, secret_content, template or src, not %s" % (where, " and ".join(sources))
            )
        try:
            secret = boolean(entry.get("secret", False), strict=True)
        except TypeError:
            raise AnsibleActionFail("%s.secret: %r is not a boolean" % (where, entry.get("secret"))) from None
        extra = entry.get("vars") or {}
        if not isinstance(extra, dict):
            raise AnsibleActionFail("%s.vars: must be a mapping of variable names to values" % where)
        if extra and entry.get("template") is None:
            raise AnsibleActionFail("%s.vars: only for an entry with template" % where)
        # secret and vars are the controller's: the module gets the text they give.
        out = dict((key, value) for key, value in entry.items() if key not in ("secret", "vars"))
        if secret and entry.get("content") is not None:
            raise AnsibleActionFail("%s.secret: use secret_content for a secret text given inline" % where)

        if entry.get("template") is not None:
            text = self._render(where, entry["template"], entry.get("path"), dict(task_vars, **extra))
        elif entry.get("src") is not None:
            text = self._read(where, entry["src"])
        else:
            return out
        out["secret_content" if secret else "content"] = text
        return out

    def _find(self, where, kind, name):
        try:
            return self._find_needle(kind, name)
        except AnsibleError as exc:
            raise AnsibleActionFail("%s.%s: %s" % (where, "template" if kind == "templates" else "src", to_text(exc))) from exc

    def _read(self, where, name):
        source = self._find(where, "files", name)
        try:
            with open(source, "rb") as handle:
                data = handle.read()
            return data.decode("utf-8")
        except UnicodeDecodeError:
            message = "%s.src: %s is not UTF-8 text; this module writes text files only" % (where, source)
            raise AnsibleActionFail(message) from None

    def _render(self, where, name, dest, task_vars):
        source = self._find(where, "templates", name)
        data = self._loader.get_text_file_contents(source)
        if trust_as_template is not None:
            data = trust_as_template(data)

        # The search path of ansible.builtin.template: the play's, the loader's base and the template's own
        # directory, each with and without templates/, for {% include %} and {% import %}.
        searchpath = list(task_vars.get("ansible_search_path", [])) + [self._loader._basedir, os.path.dirname(source)]
        paths = []
        for path in searchpath:
            paths.extend([os.path.join(path, "templates"), path])

        variables = dict(task_vars)
        variables.update(
            generate_ansible_template_vars(
                path=name, fullpath=source, dest_path=dest, include_ansible_managed="ansible_managed" not in variables
            )
        )
        templar = self._templar.copy_with_new_env(searchpath=paths, available_variables=variables)
        try:
            text = templar.template(
                data, escape_backslashes=False, overrides=dict(trim_blocks=True, lstrip_blocks=False, newline_sequence="\n")
            )
        except AnsibleError as exc:
            raise AnsibleActionFail("%s.template: %s: %s" % (where, name, to_text(exc))) from exc
        return "" if text is None else to_text(text)
