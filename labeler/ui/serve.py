"""`labeler serve`: the app in a Bokeh/Panel server on this machine only, unless told otherwise.

The server listens on 127.0.0.1 unless `--address` names another address, and says at start who
can reach it (`exposure`), so sharing is never an accident. A shared deployment uses Panel's own
login machinery, passed through unchanged rather than reimplemented: basic auth (one password, or
a JSON file of user: password), or OAuth with one of Panel's providers; a cookie secret that signs
the login cookie; and the origins (HOST[:PORT]) whose pages may open the app's websocket. `Access`
checks the combination before anything listens, so a mistake is a message naming the option, not
a traceback and not a server that is open when its owner meant it closed. What this does and does
not protect is in SECURITY.md, with the test that checks each promise.
"""
from __future__ import annotations

import dataclasses
import errno
import ipaddress
import json
import logging
import secrets
import socket
from pathlib import Path

from engine.backbones import DEFAULT_BACKBONE
from engine.embedding import DEFAULT_SIZE
from labeler.errors import ServeError
from labeler.ui.raster import RASTER_FROM

logger = logging.getLogger(__name__)

EVERY_INTERFACE = frozenset({"0.0.0.0", "::", ""})
# providers that log in against this machine, not a remote service, so need no OAuth client key or secret
KEYLESS_PROVIDERS = frozenset({"pam"})


@dataclasses.dataclass(frozen=True)
class Access:
    """Who may use a served app: Panel's login options and the extra websocket origins, named as `pn.serve`
    names them. The default is no login and this machine's origins only, right for 127.0.0.1."""

    # the password every user name shares, or a JSON file {"user": "password", ...} (Panel re-reads it at each login)
    basic_auth: str | None = None
    # signs the login cookie; default $PANEL_COOKIE_SECRET, else a fresh random one per start (logins end on restart)
    cookie_secret: str | None = None
    # HOST[:PORT] of pages allowed to open the websocket, beside 127.0.0.1/localhost and --address at --port
    websocket_origins: tuple[str, ...] = ()
    # one of Panel's OAuth providers (github, google, azure, gitlab, okta, generic, ...)
    oauth_provider: str | None = None
    # the OAuth client's key and secret; default $PANEL_OAUTH_KEY and $PANEL_OAUTH_SECRET (kept out of `ps`)
    oauth_key: str | None = None
    oauth_secret: str | None = None
    # the public address of /login when a proxy stands in front (what the provider redirects back to)
    oauth_redirect_uri: str | None = None

    @property
    def login(self) -> str | None:
        """How people log in, in words, or None when anyone who reaches the server gets the app."""
        if self.basic_auth is not None:
            return "basic auth (Panel's login page)"
        return f"OAuth via {self.oauth_provider}" if self.oauth_provider else None

    def checked(self) -> Access:
        """This access, checked, with a cookie secret whenever there is a login; a `ServeError` names a clash."""
        from panel.config import config
        if self.basic_auth is not None and self.oauth_provider:
            raise ServeError("--basic-auth and --oauth-provider both turn on a login; give one of them.")
        if self.basic_auth is not None:
            read_basic_auth(self.basic_auth)
        if self.oauth_provider:
            _check_oauth(self, config)
        else:
            given = [name for name in ("oauth_key", "oauth_secret", "oauth_redirect_uri") if getattr(self, name)]
            if given:
                raise ServeError(f"--{given[0].replace('_', '-')} only works with --oauth-provider; add one "
                                 f"(e.g. --oauth-provider github) or leave it out.")
        if self.cookie_secret is not None and not self.login:
            raise ServeError("--cookie-secret signs the login cookie, and there is no login: add --basic-auth or "
                             "--oauth-provider, or leave it out.")
        for origin in self.websocket_origins:
            _check_origin(origin)
        secret = self.cookie_secret or (config.cookie_secret if self.login else None)
        if self.login and not secret:
            secret = secrets.token_urlsafe(32)
        return dataclasses.replace(self, cookie_secret=secret)

    def server_options(self) -> dict:
        """Keyword arguments for `pn.serve` (which hands them to Panel's `get_server`); none without a login."""
        names = ("basic_auth", "cookie_secret", "oauth_provider", "oauth_key", "oauth_secret", "oauth_redirect_uri")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def read_basic_auth(value: str) -> dict[str, str] | None:
    """The users of a `--basic-auth` JSON file, or None when `value` is the password every user name shares.

    A password must not be empty; a user file must exist and hold {"user": "password"} with text values."""
    if not value:
        raise ServeError("--basic-auth is empty: give a password, or a JSON file of {\"user\": \"password\"}.")
    path = Path(value)
    if not path.is_file():
        if value.endswith(".json"):
            raise ServeError(f"--basic-auth {value}: no such file. Give an existing JSON file of "
                             f"{{\"user\": \"password\"}} (a value that is not a file would be the password itself).")
        return None
    try:
        users = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ServeError(f"--basic-auth {value}: cannot read it as JSON ({err}). It should hold "
                         f"{{\"user\": \"password\", ...}}.") from err
    if not (isinstance(users, dict) and users
            and all(isinstance(name, str) and isinstance(word, str) and word for name, word in users.items())):
        raise ServeError(f"--basic-auth {value}: expected a JSON object of at least one user name and a non-empty "
                         f"password, such as {{\"ana\": \"correct horse\"}}.")
    return users


def _check_oauth(access: Access, config) -> None:
    from panel.auth import AUTH_PROVIDERS
    provider = access.oauth_provider
    if provider not in AUTH_PROVIDERS:
        raise ServeError(f"--oauth-provider {provider!r} is not one of Panel's providers: "
                         f"{', '.join(sorted(AUTH_PROVIDERS))}.")
    if provider in KEYLESS_PROVIDERS:
        return
    for name, fallback in (("oauth_key", config.oauth_key), ("oauth_secret", config.oauth_secret)):
        if not (getattr(access, name) or fallback):
            option = name.replace("_", "-")
            raise ServeError(f"--oauth-provider {provider} needs the OAuth client's {name.split('_')[1]}: give "
                             f"--{option} or set PANEL_{name.upper()} (the variable keeps it out of `ps`).")


def _check_origin(origin: str) -> None:
    """HOST or HOST:PORT as a browser's address bar shows it (Bokeh compares exactly that), never every origin."""
    from bokeh.server.util import create_hosts_allowlist
    if "/" in origin:
        raise ServeError(f"--allow-websocket-origin {origin}: give HOST[:PORT] without scheme or path, "
                         f"e.g. labeler.example.org or 10.0.0.5:5006.")
    if origin == "*":
        raise ServeError("--allow-websocket-origin '*' lets a page of any web site drive the app in a visitor's "
                         "browser; name the hosts people use instead.")
    try:
        create_hosts_allowlist([origin], None)
    except ValueError as err:
        raise ServeError(f"--allow-websocket-origin {origin}: {err}; give HOST or HOST:PORT.") from err


def add_access_options(command) -> None:
    """`labeler serve`'s options for a shared deployment, each passed to Panel as `Access` names it."""
    group = command.add_argument_group("sharing the app (see SECURITY.md)")
    group.add_argument("--basic-auth", metavar="PASSWORD|USERS.json",
                       help="require Panel's login: one password for any user name, or (better: a password "
                            "given here shows in `ps`) a JSON file of {\"user\": \"password\"}")
    group.add_argument("--cookie-secret", metavar="SECRET",
                       help="signs the login cookie (default $PANEL_COOKIE_SECRET, else random per start: "
                            "logins end when the server restarts)")
    group.add_argument("--allow-websocket-origin", action="append", metavar="HOST[:PORT]",
                       help="also accept the app's pages at this address, as browsers show it (repeatable; "
                            "needed behind a proxy or with --address 0.0.0.0; default: only --address, "
                            "localhost and 127.0.0.1 at --port)")
    group.add_argument("--oauth-provider", metavar="NAME", help="log in with OAuth through one of Panel's "
                                                                "providers: github, google, azure, gitlab, okta, ...")
    group.add_argument("--oauth-key", metavar="KEY", help="the OAuth client id (default $PANEL_OAUTH_KEY)")
    group.add_argument("--oauth-secret", metavar="SECRET", help="the OAuth client secret (default $PANEL_OAUTH_SECRET)")
    group.add_argument("--oauth-redirect-uri", metavar="URL",
                       help="the public address of /login, when a proxy stands in front")


def access_from(args) -> Access:
    """The `Access` that `add_access_options`'s parsed options ask for, checked."""
    return Access(basic_auth=args.basic_auth, cookie_secret=args.cookie_secret,
                  websocket_origins=tuple(args.allow_websocket_origin or ()), oauth_provider=args.oauth_provider,
                  oauth_key=args.oauth_key, oauth_secret=args.oauth_secret,
                  oauth_redirect_uri=args.oauth_redirect_uri).checked()


def exposure(address: str, port: int, access: Access) -> list[str]:
    """What to tell the person starting the server: where it listens, who can reach it, what protects it."""
    host = f"[{address}]" if ":" in address else address
    where = "every network interface" if address in EVERY_INTERFACE else address
    if is_loopback(address):
        lines = [f"labeler serve: listening on http://{host}:{port}/ ({where}): this machine only; other "
                 f"machines cannot connect unless --address says otherwise (see SECURITY.md)."]
        if access.login:
            lines.append(f"login: {access.login}.")
        return lines
    lines = [f"labeler serve: listening on http://{host}:{port}/ ({where}): other machines can connect."]
    if access.login:
        lines.append(f"login: {access.login}. Traffic is plain HTTP: put TLS in front (a reverse proxy) "
                     f"beyond a trusted network.")
    else:
        lines.append("WARNING: no login. Anyone who can reach this port can see every image and change every label. "
                     "Add --basic-auth or --oauth-provider (see SECURITY.md).")
    if address in EVERY_INTERFACE and not access.websocket_origins:
        lines.append("note: browsers on other machines are refused until the address they use is given with "
                     "--allow-websocket-origin HOST[:PORT].")
    return lines


def is_loopback(address: str) -> bool:
    """Whether only this machine can reach `address` (localhost, 127.0.0.0/8, ::1)."""
    try:
        return address == "localhost" or ipaddress.ip_address(address).is_loopback
    except ValueError:                     # a host name: other machines may reach it
        return False


def serve(folder=None, *, port: int = 5006, address: str = "127.0.0.1", access: Access | None = None,
          workspace=None, show: bool = False, backbone: str = DEFAULT_BACKBONE, size: int = DEFAULT_SIZE,
          backend: str = "webgl", actor: str | None = None, raster_from: int = RASTER_FROM) -> None:
    """Serve the app; every browser tab gets its own LabelApp (its own selection and view)."""
    from ._panel import serve_pages
    from .app import LabelApp
    access = (access or Access()).checked()

    def app():
        return LabelApp(folder, workspace=workspace, backbone=backbone, size=size, backend=backend, actor=actor,
                        raster_from=raster_from)

    logger.info("serving %s on http://%s:%d", folder or "the demo", address, port)
    _dump_on_signal()
    try:
        serve_pages(app, port=port, address=address, show=show, websocket_origins=access.websocket_origins,
                    **access.server_options())
    except OSError as err:
        if not (isinstance(err, socket.gaierror) or err.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL)):
            raise
        raise ServeError(f"cannot listen on {address}:{port}: {err.strerror or err}. "
                         f"Give another --port, or an --address of this machine.") from err


def _dump_on_signal() -> None:
    """`kill -USR1 PID` logs where every page's shortcut keys stand (labeler.ui.keys.shortcuts_state): what a
    diagnosis of a page whose keys stop answering needs from the server (bench/monkey.py sends it)."""
    import signal

    from .keys import shortcuts_state

    def dump(signum, frame):
        for line in shortcuts_state():
            logger.warning("shortcuts state: %s", line)
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, dump)


def serve_in_background(folder=None, *, port: int | None = None, address: str = "127.0.0.1", **app_args) -> str:
    """Serve the app from a thread of this process (a notebook's kernel) and return its address at once;
    every tab gets its own LabelApp(folder, **app_args)."""
    from ._panel import serve_pages
    from .app import LabelApp
    return serve_pages(lambda: LabelApp(folder, **app_args), port=port, address=address, threaded=True)
