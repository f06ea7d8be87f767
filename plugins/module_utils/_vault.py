# -*- coding: utf-8 -*-
# Copyright: fleetops.mcp contributors
# Apache License 2.0 (see LICENSE)
# SPDX-License-Identifier: Apache-2.0
"""Shared HashiCorp Vault plumbing for the fleetops.mcp ``vault_*`` modules.

* :data:`VAULT_ARGUMENT_SPEC` / :func:`vault_argument_spec` are the connection
  and authentication options documented by the ``fleetops.mcp.vault`` doc
  fragment (``url``, ``auth_method``, ``token``, ``role_id``, ``secret_id``,
  ``secret_id_wrapping_token``, ``auth_mount_point``, ``namespace``, ``ca_cert``,
  ``validate_certs``, ``client_cert``, ``client_key``, ``timeout``).
* :class:`VaultClient` builds an ``hvac`` client (TLS, client certificate,
  ``X-Vault-Namespace``, timeout), authenticates with a token or with AppRole
  (optionally unwrapping a response-wrapped ``secret_id`` first) and offers
  ``read``/``write``/``delete`` on raw API paths.
* Every failure is raised as :class:`VaultModuleError`, whose message names the
  Vault path and the failure class (``permission_denied``, ``not_found``,
  ``sealed``, ``connection``, ``tls``, ``invalid_credentials``, ...). Messages
  never contain tokens, secret_ids or secret values: the client only ever puts
  the path, the HTTP status and Vault's own (redacted) error text into them.

Only ``hvac`` (and its dependency ``requests``) is needed on the host that runs
the module; a missing ``hvac`` is reported with ``missing_required_lib('hvac')``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import traceback

from ansible.module_utils.basic import env_fallback, missing_required_lib

from urllib.parse import quote

from ansible_collections.fleetops.mcp.plugins.module_utils._urls import redact_url

try:
    import hvac
    import hvac.exceptions
    import requests.exceptions
except ImportError:
    HAS_HVAC = False
    HVAC_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_HVAC = True
    HVAC_IMPORT_ERROR = None

AUTH_METHODS = ("token", "approle")
REDACTED = "********"
MAX_VAULT_ERROR_CHARS = 300

VAULT_ARGUMENT_SPEC = dict(
    url=dict(type="str", fallback=(env_fallback, ["VAULT_ADDR"])),
    auth_method=dict(type="str", default="token", choices=list(AUTH_METHODS)),
    token=dict(type="str", no_log=True, fallback=(env_fallback, ["VAULT_TOKEN"])),
    role_id=dict(type="str", no_log=False),
    secret_id=dict(type="str", no_log=True),
    secret_id_wrapping_token=dict(type="str", no_log=True),
    auth_mount_point=dict(type="str", default="approle"),
    namespace=dict(type="str", fallback=(env_fallback, ["VAULT_NAMESPACE"])),
    ca_cert=dict(type="path", fallback=(env_fallback, ["VAULT_CACERT"])),
    validate_certs=dict(type="bool", default=True),
    client_cert=dict(type="path"),
    client_key=dict(type="path", no_log=False),
    timeout=dict(type="int", default=30),
)

VAULT_MODULE_KWARGS = dict(
    required_if=[("auth_method", "approle", ("role_id",))],
    mutually_exclusive=[("secret_id", "secret_id_wrapping_token")],
    required_by={"client_key": ("client_cert",)},
)


def vault_argument_spec(**module_options):
    """The shared Vault options plus the module's own ``module_options``."""
    spec = dict((name, dict(opts)) for name, opts in VAULT_ARGUMENT_SPEC.items())
    spec.update(module_options)
    return spec


def vault_module_kwargs(**overrides):
    """``AnsibleModule`` keyword arguments (required_if, mutually_exclusive, ...) for the shared options."""
    kwargs = dict(
        (key, list(value) if isinstance(value, list) else dict(value)) for key, value in VAULT_MODULE_KWARGS.items()
    )
    for key, value in overrides.items():
        if key in ("required_if", "mutually_exclusive"):
            kwargs[key] = kwargs[key] + list(value)
        else:
            kwargs[key] = value
    return kwargs


DURATION_RE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_to_seconds(value, option="duration"):
    """Whole seconds from an int, a numeric string or a duration such as ``90s``, ``1h30m`` or ``7d``.

    Vault accepts both forms on input and always reads TTLs back as integer seconds,
    so comparing in seconds makes ``1h`` equal to ``3600``.
    """
    if isinstance(value, bool):
        raise VaultModuleError("%s: %r is not a duration." % (option, value), "configuration")
    if isinstance(value, (int, float)):
        seconds = value
    else:
        text = ("%s" % (value,)).strip().lower()
        if text == "":
            return 0
        if re.match(r"^\d+$", text):
            seconds = int(text)
        elif DURATION_RE.match(text):
            seconds = sum(float(number) * DURATION_SECONDS[unit] for number, unit in DURATION_PART_RE.findall(text))
        else:
            raise VaultModuleError(
                "%s: %r is not a duration; use seconds (3600) or a duration such as 90s, 30m, 1h30m or 7d."
                % (option, value),
                "configuration",
            )
    if seconds < 0:
        raise VaultModuleError("%s: %r must not be negative." % (option, value), "configuration")
    return int(seconds)


def path_segment(value, what="name"):
    """Quote one path segment (a policy or role name); refuse empty names and names with ``/``."""
    text = (value or "").strip()
    if not text or "/" in text:
        raise VaultModuleError(
            "Invalid %s %r: it must be non-empty and must not contain '/'." % (what, value), "configuration"
        )
    return quote(text, safe="")


class VaultModuleError(Exception):
    """A Vault failure with a secret-free message.

    ``error_class`` is one of ``configuration``, ``connection``, ``timeout``, ``tls``,
    ``invalid_credentials``, ``permission_denied``, ``not_found``, ``sealed``,
    ``uninitialized``, ``invalid_request``, ``rate_limited``, ``server_error`` or
    ``unexpected``.
    """

    def __init__(self, message, error_class, vault_path=None, http_status=None, vault_errors=None):
        super(VaultModuleError, self).__init__(message)
        self.error_class = error_class
        self.vault_path = vault_path
        self.http_status = http_status
        self.vault_errors = vault_errors

    def details(self):
        """Structured, secret-free context for ``fail_json``."""
        details = dict(error_class=self.error_class)
        if self.vault_path is not None:
            details["vault_path"] = self.vault_path
        if self.http_status is not None:
            details["http_status"] = self.http_status
        return details


def fail_module(module, exc, **result):
    """``module.fail_json`` for a :class:`VaultModuleError` (message and structured details)."""
    result.update(exc.details())
    result.setdefault("changed", False)
    module.fail_json(msg=str(exc), **result)


def require_hvac(module):
    """Fail the module with the standard missing-library message when ``hvac`` cannot be imported."""
    if not HAS_HVAC:
        module.fail_json(msg=missing_required_lib("hvac"), exception=HVAC_IMPORT_ERROR, error_class="configuration")


class VaultClient:
    """An authenticated ``hvac`` client for one module run.

    ``on_secret`` is called with every credential the client learns at run time
    (an unwrapped secret_id, the login token) so the caller can register it with
    ``module.no_log_values``; the client also redacts all known credentials from
    any text it puts into an error message.
    """

    def __init__(self, params, on_secret=None):
        self.params = params
        self.url = (params.get("url") or "").strip()
        self.warnings = []
        self._on_secret = on_secret
        self._secrets = set()
        for name in ("token", "secret_id", "secret_id_wrapping_token"):
            self._remember_secret(params.get(name))
        self._check_configuration()
        self._client = self._build_client()

    # -- construction ---------------------------------------------------------- #

    @classmethod
    def from_module(cls, module):
        """Check ``hvac``, build and authenticate a client from ``module.params``; fail the module on error."""
        require_hvac(module)
        try:
            client = cls(module.params, on_secret=module.no_log_values.add)
            client.authenticate()
        except VaultModuleError as exc:
            fail_module(module, exc)
        return client

    def _check_configuration(self):
        if not self.url:
            raise VaultModuleError(
                "No Vault address: set the url option or the VAULT_ADDR environment variable of the module.",
                "configuration",
            )
        if not re.match(r"^https?://[^/]", self.url):
            raise VaultModuleError(
                "Invalid Vault url %r: it must start with http:// or https:// and name a host." % redact_url(self.url),
                "configuration",
            )
        for option in ("ca_cert", "client_cert", "client_key"):
            path = self.params.get(option)
            if path and not os.path.isfile(path):
                raise VaultModuleError(
                    "The %s file %s does not exist or is not a file." % (option, path), "configuration"
                )

    def _build_client(self):
        params = self.params
        verify = params.get("validate_certs", True)
        if verify and params.get("ca_cert"):
            verify = params["ca_cert"]
        if not verify:
            self.warnings.append("validate_certs=false: the Vault server certificate is not verified (insecure).")
            _silence_insecure_request_warning()
        cert = None
        if params.get("client_cert"):
            cert = (params["client_cert"], params["client_key"]) if params.get("client_key") else params["client_cert"]
        client = hvac.Client(
            url=self.url,
            token=None,
            verify=verify,
            cert=cert,
            timeout=params.get("timeout") or 30,
            namespace=params.get("namespace") or None,
        )
        # hvac falls back to VAULT_TOKEN / ~/.vault-token on its own; only send what the task configured.
        client.token = None
        return client

    def close(self):
        """Close the HTTP session."""
        try:
            self._client.adapter.close()
        except Exception:  # pragma: no cover - closing must never mask the real outcome
            pass

    # -- authentication -------------------------------------------------------- #

    def authenticate(self):
        """Authenticate with the configured ``auth_method``."""
        if self.params.get("auth_method", "token") == "approle":
            self._login_approle()
            return
        token = self.params.get("token")
        if not token:
            raise VaultModuleError(
                "auth_method=token needs a Vault token: set the token option or the VAULT_TOKEN environment "
                "variable of the module.",
                "configuration",
            )
        self._client.token = token

    def _login_approle(self):
        role_id = self.params.get("role_id")
        secret_id = self.params.get("secret_id")
        if self.params.get("secret_id_wrapping_token"):
            secret_id = self._unwrap_secret_id(self.params["secret_id_wrapping_token"])
        mount = path_segment(self.params.get("auth_mount_point") or "approle", "auth_mount_point")
        login_path = "auth/%s/login" % mount
        try:
            response = self._client.auth.approle.login(role_id=role_id, secret_id=secret_id, mount_point=mount)
        except Exception as exc:  # translated below; hvac and requests raise many types
            error = self._translate(exc, login_path, "logging in with AppRole")
            if error.error_class in ("invalid_request", "permission_denied"):
                error = self._invalid_approle_credentials(error, login_path, secret_id is None)
            # The translated error replaces hvac's exception, whose text is not redacted: it is not chained.
            raise error from None
        self._remember_secret(((response or {}).get("auth") or {}).get("client_token"))

    def _invalid_approle_credentials(self, error, login_path, no_secret_id):
        hint = (
            " No secret_id was given: set secret_id or secret_id_wrapping_token unless the role has"
            " bind_secret_id=false."
            if no_secret_id
            else " Check role_id, and that the secret_id has not expired, been used up (secret_id_num_uses) or been"
            " restricted to other source addresses (CIDR)."
        )
        return VaultModuleError(
            "Vault rejected the AppRole credentials at Vault path '%s' (invalid credentials at login, HTTP %s: %s).%s"
            % (login_path, error.http_status, error.vault_errors or "no details", hint),
            "invalid_credentials",
            login_path,
            error.http_status,
        )

    def _unwrap_secret_id(self, wrapping_token):
        """Unwrap a response-wrapped secret_id, using the wrapping token as the client token (single use)."""
        unwrap_path = "sys/wrapping/unwrap"
        self._client.token = wrapping_token
        try:
            response = self._client.sys.unwrap()
        except Exception as exc:
            error = self._translate(exc, unwrap_path, "unwrapping the secret_id wrapping token")
            if error.error_class in ("invalid_request", "permission_denied"):
                error = VaultModuleError(
                    "Vault rejected the secret_id wrapping token at Vault path '%s' (invalid credentials at login, "
                    "HTTP %s): it is invalid, expired or was already unwrapped. A wrapping token can be unwrapped "
                    "only once; if nothing in your deployment unwrapped it before, treat the wrapped secret_id as "
                    "compromised and destroy it." % (unwrap_path, error.http_status),
                    "invalid_credentials",
                    unwrap_path,
                    error.http_status,
                )
            raise error from None
        finally:
            self._client.token = None
        secret_id = (((response or {}) if isinstance(response, dict) else {}).get("data") or {}).get("secret_id")
        if not secret_id:
            raise VaultModuleError(
                "The secret_id wrapping token was valid but did not wrap an AppRole secret_id (no data.secret_id in "
                "the unwrapped response). Wrap the response of auth/<mount>/role/<name>/secret-id.",
                "invalid_credentials",
                unwrap_path,
            )
        self._remember_secret(secret_id)
        return secret_id

    # -- raw API calls ----------------------------------------------------------- #

    def read(self, path, action="reading"):
        """GET ``path``; the response dict, or ``None`` when Vault answers 404."""
        try:
            return self._request("GET", path, action)
        except VaultModuleError as exc:
            if exc.error_class == "not_found":
                return None
            raise

    def write(self, path, data, action="writing", wrap_ttl=None):
        """POST ``data`` to ``path`` (optionally response-wrapped); the response dict or ``None`` (204)."""
        return self._request("POST", path, action, json=data, wrap_ttl=wrap_ttl)

    def delete(self, path, action="deleting"):
        """DELETE ``path``."""
        return self._request("DELETE", path, action)

    def _request(self, method, path, action, **kwargs):
        kwargs = dict((key, value) for key, value in kwargs.items() if value is not None)
        try:
            response = self._client.adapter.request(method, "/v1/%s" % path, **kwargs)
        except Exception as exc:
            raise self._translate(exc, path, action) from None
        body = self._json(response)
        for warning in (body or {}).get("warnings") or []:
            self.warnings.append("Vault warning for %s at Vault path '%s': %s" % (action, path, self.redact(warning)))
        return body

    @staticmethod
    def _json(response):
        if isinstance(response, dict):
            return response
        if response is None or getattr(response, "status_code", 204) == 204 or not getattr(response, "content", b""):
            return None
        try:
            return response.json()
        except ValueError:
            return None

    # -- error translation --------------------------------------------------- #

    def redact(self, text):
        """``text`` with every credential this client knows replaced by ``********``."""
        text = "%s" % (text,)
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def _remember_secret(self, value):
        if value and isinstance(value, str) and len(value) >= 4:
            self._secrets.add(value)
            if self._on_secret is not None:
                self._on_secret(value)

    def _vault_errors(self, exc):
        errors = getattr(exc, "errors", None)
        if isinstance(errors, (list, tuple)):
            text = "; ".join("%s" % (error,) for error in errors if error)
        else:
            text = "%s" % (errors or "")
        text = " ".join(self.redact(text).split())
        if len(text) > MAX_VAULT_ERROR_CHARS:
            text = text[:MAX_VAULT_ERROR_CHARS] + "..."
        return text or "no details"

    def _translate(self, exc, path, action):
        """A :class:`VaultModuleError` for any exception raised while talking to Vault."""
        if isinstance(exc, VaultModuleError):
            return exc
        if isinstance(exc, hvac.exceptions.VaultError):
            return self._translate_http(exc, path, action)
        if isinstance(exc, requests.exceptions.SSLError):
            return self._tls_error(exc, path, action)
        if isinstance(exc, requests.exceptions.Timeout):
            return VaultModuleError(
                "Timed out after %ss waiting for Vault at %s while %s at Vault path '%s' (timeout). Check that Vault "
                "is reachable and healthy, or raise the timeout option."
                % (self.params.get("timeout"), redact_url(self.url), action, path),
                "timeout",
                path,
            )
        if isinstance(exc, requests.exceptions.ConnectionError):
            return VaultModuleError(
                "Cannot connect to Vault at %s while %s at Vault path '%s' (%s). Check the url option or VAULT_ADDR, "
                "the port, firewalls, and that Vault is running."
                % (redact_url(self.url), action, path, _connection_reason(exc)),
                "connection",
                path,
            )
        if isinstance(exc, (requests.exceptions.RequestException, IOError, ValueError)):
            return VaultModuleError(
                "Request to Vault at %s failed while %s at Vault path '%s': %s"
                % (redact_url(self.url), action, path, self.redact(_short(exc))),
                "configuration" if isinstance(exc, (IOError, ValueError)) else "unexpected",
                path,
            )
        return VaultModuleError(
            "Unexpected %s while %s at Vault path '%s': %s"
            % (type(exc).__name__, action, path, self.redact(_short(exc))),
            "unexpected",
            path,
        )

    def _translate_http(self, exc, path, action):
        status = _status_of(exc)
        vault_said = self._vault_errors(exc)
        where = "while %s at Vault path '%s'" % (action, path)
        if status == 403:
            return VaultModuleError(
                "Permission denied (HTTP 403) %s: the Vault token is invalid or expired, or its policies do not grant "
                "the capability this needs on that path." % where,
                "permission_denied",
                path,
                status,
                vault_said,
            )
        if status == 404:
            return VaultModuleError(
                "Not found (HTTP 404) %s: nothing exists there, or no secrets engine or auth method is mounted at that "
                "path." % where,
                "not_found",
                path,
                status,
                vault_said,
            )
        if status == 503:
            return VaultModuleError(
                "Vault is sealed or unavailable (HTTP 503) %s. Unseal Vault (or wait for it to recover) and retry. "
                "(Vault said: %s)" % (where, vault_said),
                "sealed",
                path,
                status,
                vault_said,
            )
        if status == 501:
            return VaultModuleError(
                "Vault is not initialized (HTTP 501) %s. Initialize and unseal it first." % where,
                "uninitialized",
                path,
                status,
                vault_said,
            )
        if status == 400:
            return VaultModuleError(
                "Vault rejected the request (HTTP 400) %s (Vault said: %s)." % (where, vault_said),
                "invalid_request",
                path,
                status,
                vault_said,
            )
        if status == 429:
            return VaultModuleError(
                "Vault answered HTTP 429 %s: rate limited, or the node is a standby that cannot serve this request. "
                "(Vault said: %s)" % (where, vault_said),
                "rate_limited",
                path,
                status,
                vault_said,
            )
        if status is not None and status >= 500:
            return VaultModuleError(
                "Vault reported a server error (HTTP %s) %s (Vault said: %s)." % (status, where, vault_said),
                "server_error",
                path,
                status,
                vault_said,
            )
        return VaultModuleError(
            "Unexpected answer from Vault (HTTP %s) %s (Vault said: %s)." % (status or "unknown", where, vault_said),
            "unexpected",
            path,
            status,
            vault_said,
        )

    def _tls_error(self, exc, path, action):
        reason = _tls_reason(exc)
        if self.params.get("ca_cert"):
            hint = (
                "Check that ca_cert %s is the CA that signed Vault's certificate and that the certificate names "
                "this host." % self.params["ca_cert"]
            )
        else:
            hint = (
                "Set ca_cert (or VAULT_CACERT) to the PEM CA bundle that signed Vault's certificate; "
                "validate_certs=false disables verification and is insecure."
            )
        return VaultModuleError(
            "TLS error talking to Vault at %s while %s at Vault path '%s' (%s). %s"
            % (redact_url(self.url), action, path, reason, hint),
            "tls",
            path,
        )


def _silence_insecure_request_warning():
    """The module reports disabled verification itself; keep urllib3's per-request warning off stderr."""
    try:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    except Exception:  # pragma: no cover - purely cosmetic
        pass


def _status_of(exc):
    """HTTP status of an hvac exception (hvac maps the status to the exception class)."""
    mapping = (
        ("InvalidRequest", 400),
        ("Unauthorized", 401),
        ("Forbidden", 403),
        ("InvalidPath", 404),
        ("PreconditionFailed", 412),
        ("RateLimitExceeded", 429),
        ("InternalServerError", 500),
        ("VaultNotInitialized", 501),
        ("BadGateway", 502),
        ("VaultDown", 503),
    )
    for name, status in mapping:
        cls = getattr(hvac.exceptions, name, None)
        if cls is not None and isinstance(exc, cls):
            return status
    match = re.search(r"\b([1-5]\d\d)\b", "%s" % (getattr(exc, "text", "") or ""))
    return int(match.group(1)) if match else None


def _short(exc):
    return " ".join(("%s" % (exc,)).split())[:MAX_VAULT_ERROR_CHARS]


def _tls_reason(exc):
    text = "%s" % (exc,)
    for pattern in (
        r"certificate verify failed: [^()\]'\"]+",
        r"hostname mismatch[^()\]'\"]*",
        r"wrong version number",
        r"tlsv1 alert [a-z ]+",
        r"sslv3 alert [a-z ]+",
        r"unknown protocol",
    ):
        match = re.search(pattern, text, re.I)
        if match:
            reason = match.group(0).strip()
            if "wrong version number" in reason or "unknown protocol" in reason:
                reason += ": the server did not answer TLS; is the url https:// for a plain-HTTP listener?"
            return "TLS failure: %s" % reason
    return "TLS failure: %s" % _short(exc)


def _connection_reason(exc):
    """``connection refused``, ``name resolution failed`` or a short reason for a requests ConnectionError."""
    seen = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return "connection refused: nothing is listening at that address and port"
        if isinstance(current, ConnectionResetError) or type(current).__name__ == "RemoteDisconnected":
            return (
                "the server closed the connection without answering; is it an https:// listener addressed with "
                "http://, or not Vault at all?"
            )
        stack.extend(
            [
                getattr(current, "__cause__", None),
                getattr(current, "__context__", None),
                getattr(current, "reason", None),
            ]
        )
        stack.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
    text = "%s" % (exc,)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused: nothing is listening at that address and port"
    if re.search(
        r"Name or service not known|nodename nor servname|Temporary failure in name resolution|getaddrinfo failed", text
    ):
        return "host name could not be resolved"
    if re.search(r"No route to host|Network is unreachable", text):
        return "host unreachable"
    return "unreachable: %s" % _short(exc)
