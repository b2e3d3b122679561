"""A local replica of the Copernicus Data Space identity service (Keycloak): the token endpoint the ``cdse``
download source uses, with tokens as short-lived as a test needs.

``POST <url>`` with a form: ``grant_type=password`` (``username``, ``password``, ``client_id=cdse-public``) or
``grant_type=refresh_token`` (``refresh_token``, ``client_id``). Answers Keycloak's JSON: ``access_token``,
``expires_in``, ``refresh_token``, ``refresh_expires_in``, ``token_type``; a wrong password gets 401
``invalid_grant``/"Invalid user credentials", a dead refresh token 400 ``invalid_grant``/"Token is not active".

A download server asks :meth:`Identity.check` whether a request's ``Authorization`` header holds a live token;
``refusals`` records why tokens were refused ("expired", "revoked", "unknown", "missing"), ``grants`` the grant
types in order. :meth:`revoke_access` ends every access token issued so far (a server-side logout).
"""

import json
import secrets
import threading
import time
import urllib.parse

CLIENT_ID = "cdse-public"


class Identity:
    def __init__(self, server, username, password, lifetime=600.0, refresh_lifetime=3600.0, path="/token"):
        self.username, self.password = username, password
        self.lifetime, self.refresh_lifetime = lifetime, refresh_lifetime
        self.route = server.route(path, method="POST", handler=self._grant)
        self.url = server.url(path)
        self.access = {}  # token -> time issued
        self.refresh = {}
        self.revoked = set()
        self.grants = []
        self.refusals = []
        self.lock = threading.Lock()

    def _grant(self, request):
        form = dict(urllib.parse.parse_qsl(request.body.decode()))
        kind = form.get("grant_type")
        with self.lock:
            self.grants.append(kind)
            if form.get("client_id") != CLIENT_ID:
                return _error(401, "unauthorized_client", "Invalid client or Invalid client credentials")
            if kind == "password":
                if (form.get("username"), form.get("password")) != (self.username, self.password):
                    return _error(401, "invalid_grant", "Invalid user credentials")
            elif kind == "refresh_token":
                issued = self.refresh.get(form.get("refresh_token"))
                if issued is None or time.monotonic() - issued >= self.refresh_lifetime:
                    return _error(400, "invalid_grant", "Token is not active")
            else:
                return _error(400, "unsupported_grant_type", "Unsupported grant_type")
            return self._issue()

    def _issue(self):
        now = time.monotonic()
        access, refresh = f"eyJ-{secrets.token_hex(12)}", f"eyR-{secrets.token_hex(12)}"
        self.access[access], self.refresh[refresh] = now, now
        body = {"access_token": access, "expires_in": self.lifetime, "refresh_expires_in": self.refresh_lifetime,
                "refresh_token": refresh, "token_type": "Bearer", "not-before-policy": 0, "scope": "profile email"}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def check(self, authorization):
        """None when ``authorization`` ('Bearer <token>') holds a live token, else why not (also recorded)."""
        token = (authorization or "")[len("Bearer "):] if (authorization or "").startswith("Bearer ") else None
        with self.lock:
            if token is None:
                reason = "missing"
            elif token in self.revoked:
                reason = "revoked"
            elif token not in self.access:
                reason = "unknown"
            elif time.monotonic() - self.access[token] >= self.lifetime:
                reason = "expired"
            else:
                return None
            self.refusals.append(reason)
            return reason

    def revoke_access(self):
        with self.lock:
            self.revoked |= set(self.access)

    def tokens(self):
        """Every token issued so far (to check none of them leaked into a log)."""
        with self.lock:
            return list(self.access) + list(self.refresh)


def _error(status, error, description):
    body = {"error": error, "error_description": description}
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()
