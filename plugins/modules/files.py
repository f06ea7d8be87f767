#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""Ansible module: lay out a role's directories and files in one call."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: files
short_description: Directories and files of one role in one call, each written only when it differs
version_added: "0.1.0"
description:
  - Makes a list of directories, files and empty files on the target in one module call, in the order given.
    Each file is compared with what is there and written only when its bytes differ; owner, group and mode
    are set only where they differ. So a re-run that changes nothing costs one call, where
    M(ansible.builtin.template) and M(ansible.builtin.copy) cost two a file (a stat, then a file call).
  - A file's text comes from O(files[].content), O(files[].secret_content), or, through this module's action
    plugin on the controller, from O(files[].template) (a Jinja2 template of the role's C(templates/), rendered
    like M(ansible.builtin.template), with C(ansible_managed)) or O(files[].src) (a file of the role's C(files/)).
  - A new text is written to a temporary file in the same directory, given its owner, group and mode, checked with
    O(files[].validate) when set, and renamed over the old file, so a reader never sees half a file and a text the
    checker rejects never replaces the old one.
  - Entries are handled in order and a later entry's O(files[].validate) sees the files written before it (for example
    nginx's main configuration checked after the files it includes). The first failing entry stops the call;
    the entries before it stay done.
  - The task reports changed when any entry changed, so group the entries by the handler they should notify, one task a handler.
author:
  - fleetops.mcp contributors (@fleetops)
extends_documentation_fragment:
  - fleetops.mcp.attributes
options:
  files:
    description:
      - What to make, in order.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description:
          - Absolute path on the target.
        type: path
        required: true
      state:
        description:
          - V(file) writes the text of one of O(files[].content), O(files[].secret_content), O(files[].template) or
            O(files[].src).
          - V(directory) makes the directory (and missing parents, owned by root, mode 0755).
          - V(touch) makes an empty file when there is none and leaves an existing file's text and times alone.
          - V(absent) removes a file, a link or an empty directory.
        type: str
        choices: [file, directory, touch, absent]
        default: file
      content:
        description:
          - The text of a V(file). Shown in diffs.
        type: str
      secret_content:
        description:
          - The text of a V(file) that is secret. Never shown in diffs or returned; masked in the module's invocation.
        type: str
      template:
        description:
          - A template's name, resolved and rendered on the controller by the action plugin (which then sets
            O(files[].content)). The module itself ignores it.
        type: str
      vars:
        description:
          - Variables for this entry's O(files[].template) only, on top of the task's (for example what C(item)
            was to a template task in a loop). Used by the action plugin on the controller; not sent to the target.
        type: dict
      src:
        description:
          - A file of the role's C(files/), read on the controller by the action plugin (which then sets
            O(files[].content)). The module itself ignores it.
        type: str
      secret:
        description:
          - With O(files[].template) or O(files[].src), pass the text as O(files[].secret_content).
        type: bool
        default: false
      owner:
        description:
          - Owner's user name.
        type: str
        default: root
      group:
        description:
          - Group name.
        type: str
        default: root
      mode:
        description:
          - Octal mode as a string, for example V('0640'). Required for every state but V(absent), so a file
            never gets whatever the umask gives.
        type: str
      validate:
        description:
          - A command that checks a new text before it replaces the old one; C(%s) is the temporary file's path.
            It runs only when the text differs, and not in check mode. For a secret text the checker's output
            is not put into the failure message.
        type: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Secret texts are never shown; a secret file's diff says only that it changed.
  platform:
    platforms: posix
notes:
  - Texts travel in the module's arguments, so keep this to configuration-sized files.
"""

EXAMPLES = r"""
- name: Lay out the backup's directories, configuration and units
  fleetops.mcp.files:
    files:
      - path: /var/backups/fleetops
        state: directory
        mode: "0700"
      - path: /etc/fleetops/backup.json
        content: "{{ settings | to_nice_json }}\n"
        mode: "0600"
        validate: /usr/local/libexec/fleetops/fleetops-backup check --config %s
      - path: /etc/systemd/system/fleetops-backup.timer
        template: fleetops-backup.timer.j2
        mode: "0644"
  notify: Restart the backup timer

- name: A key only root may read
  fleetops.mcp.files:
    files:
      - path: /etc/fleetops/manifest.key
        secret_content: "{{ manifest_key }}"
        mode: "0400"
"""

RETURN = r"""
changed_paths:
  description: The paths that changed (or would change in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [/etc/fleetops/backup.json]
files:
  description: One entry a path, in order, with what was done. Texts are never returned.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The path.
      type: str
    state:
      description: The state asked for.
      type: str
    changed:
      description: Whether this path changed.
      type: bool
    changes:
      description: What changed, from V(created), V(content), V(owner), V(group), V(mode) and V(removed).
      type: list
      elements: str
  sample: [{path: /etc/fleetops/backup.json, state: file, changed: true, changes: [content]}]
"""

import errno
import grp
import os
import pwd
import re
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text

_MODE = re.compile(r"^0?[0-7]{3,4}$")
# Texts up to this size are put into diffs; larger ones are reported as changed without their text.
_DIFF_MAX = 256 * 1024


class EntryError(Exception):
    """A problem with one entry; the message names it."""


def _ids(entry, where, check_mode):
    """The entry's uid and gid. In check mode a user or group that is not there yet (one a package of the
    same run would create) is None, which never matches, so the entry reports the change it would make."""
    try:
        uid = pwd.getpwnam(entry["owner"]).pw_uid
    except KeyError:
        if not check_mode:
            raise EntryError("%s.owner: no user %r on this host" % (where, entry["owner"])) from None
        uid = None
    try:
        gid = grp.getgrnam(entry["group"]).gr_gid
    except KeyError:
        if not check_mode:
            raise EntryError("%s.group: no group %r on this host" % (where, entry["group"])) from None
        gid = None
    return uid, gid


def check_entries(entries):
    """Return a list of messages, each naming the entry and field it is about."""
    errors = []
    for index, entry in enumerate(entries):
        where = "files[%d] (%s)" % (index, entry.get("path"))
        path = entry.get("path") or ""
        if not os.path.isabs(path):
            errors.append("%s.path: must be an absolute path" % where)
        texts = [key for key in ("content", "secret_content") if entry.get(key) is not None]
        state = entry.get("state") or "file"
        if state == "file" and len(texts) != 1:
            errors.append("%s: a file needs exactly one of content, secret_content, template or src" % where)
        if state != "file" and texts:
            errors.append("%s: %s is only for state=file, not state=%s" % (where, texts[0], state))
        if state != "file" and entry.get("validate"):
            errors.append("%s.validate: only for state=file" % where)
        if state != "absent":
            mode = entry.get("mode")
            if mode is None:
                errors.append("%s.mode: required (for example '0644'), so the file never gets the umask's mode" % where)
            elif not _MODE.match(str(mode)):
                errors.append("%s.mode: %r is not an octal mode such as '0640'" % (where, mode))
        if entry.get("validate") and "%s" not in entry["validate"]:
            errors.append("%s.validate: must contain %%s, the path of the text to check" % where)
    return errors


def _attr_changes(st, uid, gid, mode):
    changes = []
    if st.st_uid != uid:
        changes.append("owner")
    if st.st_gid != gid:
        changes.append("group")
    if stat.S_IMODE(st.st_mode) != mode:
        changes.append("mode")
    return changes


def _attr_diff(path, st, entry, uid, gid, mode):
    before = {"path": path}
    after = {"path": path}
    if st is None:
        before["state"] = "absent"
        after["state"] = entry["state"]
    else:
        if st.st_uid != uid:
            before["owner"], after["owner"] = st.st_uid, uid
        if st.st_gid != gid:
            before["group"], after["group"] = st.st_gid, gid
        if stat.S_IMODE(st.st_mode) != mode:
            before["mode"], after["mode"] = "%04o" % stat.S_IMODE(st.st_mode), "%04o" % mode
    return {"before": before, "after": after}


def _lstat(path):
    try:
        return os.lstat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


def _set_attrs(path, st, uid, gid, mode):
    if st is None or st.st_uid != uid or st.st_gid != gid:
        os.chown(path, uid, gid)
    if st is None or stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def _make_parents(path, check_mode):
    parent = os.path.dirname(path)
    if os.path.isdir(parent) or check_mode:
        return
    os.makedirs(parent, 0o755)


class Runner(object):
    """Applies the entries; kept apart from AnsibleModule so the unit tests can drive it."""

    def __init__(self, check_mode, want_diff, run_command):
        self.check_mode = check_mode
        self.want_diff = want_diff
        self.run_command = run_command
        self.diffs = []

    def apply(self, index, entry):
        where = "files[%d] (%s)" % (index, entry["path"])
        path = entry["path"]
        state = entry["state"]
        st = _lstat(path)
        if state == "absent":
            return self._absent(where, path, st)
        uid, gid = _ids(entry, where, self.check_mode)
        mode = int(str(entry["mode"]), 8)
        if state == "directory":
            return self._directory(where, path, st, entry, uid, gid, mode)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise EntryError("%s: is there but not a regular file (a directory or a link); not replacing it" % where)
        if state == "touch":
            return self._touch(path, st, entry, uid, gid, mode)
        return self._file(where, path, st, entry, uid, gid, mode)

    def _absent(self, where, path, st):
        if st is None:
            return []
        if stat.S_ISDIR(st.st_mode):
            if os.listdir(path):
                raise EntryError("%s: is a directory that is not empty; not removing it" % where)
            if not self.check_mode:
                os.rmdir(path)
        elif not self.check_mode:
            os.unlink(path)
        if self.want_diff:
            self.diffs.append({"before": {"path": path, "state": "present"}, "after": {"path": path, "state": "absent"}})
        return ["removed"]

    def _directory(self, where, path, st, entry, uid, gid, mode):
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise EntryError("%s: is there but not a directory; not replacing it" % where)
        changes = ["created"] if st is None else _attr_changes(st, uid, gid, mode)
        if changes and not self.check_mode:
            if st is None:
                _make_parents(path, False)
                os.mkdir(path, 0o700)
            _set_attrs(path, st, uid, gid, mode)
        if changes and self.want_diff:
            self.diffs.append(_attr_diff(path, st, entry, uid, gid, mode))
        return changes

    def _touch(self, path, st, entry, uid, gid, mode):
        changes = ["created"] if st is None else _attr_changes(st, uid, gid, mode)
        if changes and not self.check_mode:
            if st is None:
                _make_parents(path, False)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
            _set_attrs(path, st, uid, gid, mode)
        if changes and self.want_diff:
            self.diffs.append(_attr_diff(path, st, entry, uid, gid, mode))
        return changes

    def _file(self, where, path, st, entry, uid, gid, mode):
        secret = entry.get("secret_content") is not None
        text = entry["secret_content"] if secret else entry["content"]
        new = to_bytes(text, errors="surrogate_or_strict")
        old = None
        if st is not None:
            with open(path, "rb") as handle:
                old = handle.read()
        if old == new:
            changes = _attr_changes(st, uid, gid, mode)
            if changes and not self.check_mode:
                _set_attrs(path, st, uid, gid, mode)
            if changes and self.want_diff:
                self.diffs.append(_attr_diff(path, st, entry, uid, gid, mode))
            return changes
        changes = ["created"] if st is None else ["content"] + _attr_changes(st, uid, gid, mode)
        if self.want_diff:
            self.diffs.append(self._text_diff(path, old, new, secret))
        if self.check_mode:
            return changes
        _make_parents(path, False)
        directory = os.path.dirname(path)
        fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".fleetops", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchown(handle.fileno(), uid, gid)
                os.fchmod(handle.fileno(), mode)
                handle.write(new)
                handle.flush()
                os.fsync(handle.fileno())
            if entry.get("validate"):
                command = entry["validate"].replace("%s", tmp)
                rc, out, err = self.run_command(command)
                if rc != 0:
                    # A checker may quote the text it rejects: for a secret text its output is withheld.
                    said = "(output withheld: the text is secret)" if secret else (err or out).strip()[-2000:]
                    raise EntryError("%s.validate: %s rejected the new text (rc %d): %s" % (where, command.split()[0], rc, said))
            os.rename(tmp, path)
            tmp = None
        finally:
            if tmp is not None and os.path.lexists(tmp):
                os.unlink(tmp)
        return changes

    @staticmethod
    def _text_diff(path, old, new, secret):
        diff = {"before_header": path, "after_header": path}
        if secret:
            diff["before"] = "" if old is None else "(secret text, not shown)\n"
            diff["after"] = "(secret text, not shown; it changed)\n"
            return diff
        for key, data in (("before", old), ("after", new)):
            if data is None:
                diff[key] = ""
            elif len(data) > _DIFF_MAX or b"\x00" in data:
                diff[key] = "(%d bytes, not shown)\n" % len(data)
            else:
                diff[key] = to_text(data, errors="surrogate_or_replace")
        return diff


_TEXTS = ("content", "secret_content")


def _summary(entries):
    """The entries without their texts (a text's length instead): what is logged and returned as the invocation."""
    summary = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        item = dict((key, value) for key, value in entry.items() if key not in _TEXTS and value is not None)
        for key in _TEXTS:
            if entry.get(key) is not None:
                item[key] = "(%d characters, not shown)" % len(entry[key])
        summary.append(item)
    return summary


class FilesModule(AnsibleModule):
    """AnsibleModule that logs and returns its entries without their texts.

    AnsibleModule logs every invocation to the host's journal, each parameter as one string. A text inside
    a list of entries is not masked there (its newlines are escaped in that string, so the no_log value
    never matches), and whole configuration files and scripts do not belong in the journal either: the log
    names each entry's path and state, and a text only by its length.
    """

    def _log_invocation(self):
        entries = [e for e in self.params.get("files") or [] if isinstance(e, dict)]
        self.log("Invoked with files=%s" % ", ".join("%s:%s" % (e.get("state"), e.get("path")) for e in entries))

    def exit_json(self, **kwargs):
        kwargs.setdefault("invocation", {"module_args": {"files": _summary(self.params.get("files"))}})
        super(FilesModule, self).exit_json(**kwargs)

    def fail_json(self, msg, **kwargs):
        if self.params:
            kwargs.setdefault("invocation", {"module_args": {"files": _summary(self.params.get("files"))}})
        super(FilesModule, self).fail_json(msg, **kwargs)


def main():
    module = FilesModule(
        argument_spec=dict(
            files=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    path=dict(type="path", required=True),
                    state=dict(type="str", choices=["file", "directory", "touch", "absent"], default="file"),
                    content=dict(type="str"),
                    secret_content=dict(type="str", no_log=True),
                    template=dict(type="str"),
                    src=dict(type="str"),
                    vars=dict(type="dict"),
                    secret=dict(type="bool", default=False),
                    owner=dict(type="str", default="root"),
                    group=dict(type="str", default="root"),
                    mode=dict(type="str"),
                    validate=dict(type="str"),
                ),
            ),
        ),
        supports_check_mode=True,
    )
    entries = module.params["files"]
    errors = check_entries(entries)
    if errors:
        module.fail_json(msg="; ".join(errors), errors=errors, changed=False)

    runner = Runner(module.check_mode, module._diff, module.run_command)
    results = []
    for index, entry in enumerate(entries):
        try:
            changes = runner.apply(index, entry)
        except (EntryError, OSError) as exc:
            message = to_native(exc)
            if isinstance(exc, OSError):
                message = "files[%d] (%s): %s" % (index, entry["path"], message)
            module.fail_json(
                msg=message,
                changed=any(item["changed"] for item in results),
                files=results,
                changed_paths=[item["path"] for item in results if item["changed"]],
            )
        results.append({"path": entry["path"], "state": entry["state"], "changed": bool(changes), "changes": changes})

    outcome = dict(
        changed=any(item["changed"] for item in results),
        files=results,
        changed_paths=[item["path"] for item in results if item["changed"]],
    )
    if module._diff:
        outcome["diff"] = runner.diffs
    module.exit_json(**outcome)


if __name__ == "__main__":
    main()
