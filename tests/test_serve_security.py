"""The server's surface over real HTTP on 127.0.0.1: where it listens, who gets in, which origins may open
its websocket, and that no URL reads a file it should not. SECURITY.md names these tests.

One `labeler serve` with Panel's basic auth (a JSON file of users) and one extra allowed origin serves a
small project for the whole module; a second one with OAuth settings checks only that they are passed to
Panel. Every request is sent as written (`http.client`, no normalizing of `..` or `%2f`).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import socket
import urllib.parse
from pathlib import Path

import pytest

from labeler.cli import main
from labeler.testing import assert_no_traceback, start_server, stop_server

USERS = {"ana": "correct horse battery"}
FOREIGN = "http://evil.example"
ALLOWED = "labeler.example.org"          # given with --allow-websocket-origin
SECRET = "TOP-SECRET-7f3a9c"             # the content of a file outside the project; no response may contain it
IMPORTED = "imported-by-a-url"           # written by a module beside the server if a URL ever imports it


# -- a served project ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A folder beside the project holding a secret file, and a module that leaves a mark when imported."""
    root = tmp_path_factory.mktemp("outside")
    (root / "secret.txt").write_text(SECRET)
    marker = root / IMPORTED
    (root / "planted_module.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\n")
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory, outside) -> tuple[Path, Path]:
    """(image folder, workspace): four generated images and a symbolic link to the secret file."""
    from _helpers import write_image
    root = tmp_path_factory.mktemp("served")
    folder, workspace = root / "images", root / "workspace"
    for index in range(4):
        write_image(folder / f"img_{index}.png", seed=index)
    (folder / "link.txt").symlink_to(outside / "secret.txt")
    return folder, workspace


@pytest.fixture(scope="module")
def server(project, outside, tmp_path_factory):
    """(base URL, process): `labeler serve` with --basic-auth USERS.json and one allowed origin, started in the
    folder of the planted module (so a URL naming that module could import it)."""
    users = tmp_path_factory.mktemp("auth") / "users.json"
    users.write_text(json.dumps(USERS))
    proc, url = start_server(*project, options=["--basic-auth", str(users), "--allow-websocket-origin", ALLOWED],
                             probe="favicon.ico", cwd=outside, timeout=120)
    yield url.rstrip("/"), proc
    assert_no_traceback(stop_server(proc))


def _request(base: str, path: str, *, method: str = "GET", cookie: str = "", form: dict | None = None):
    """(status, headers, body) of one request sent exactly as written, redirects not followed."""
    parsed = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    headers = {"Cookie": cookie} if cookie else {}
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def _log_in(base: str, user: str, password: str) -> str:
    """The cookies a POST to Panel's login page sets, as a Cookie header ('' when it sets no user)."""
    _, headers, _ = _request(base, "/login", method="POST", form={"username": user, "password": password})
    cookies = [value.split(";", 1)[0] for value in headers.get_all("Set-Cookie") or []]
    return "; ".join(cookies) if any(cookie.startswith("user=2|") for cookie in cookies) else ""


@pytest.fixture(scope="module")
def cookie(server) -> str:
    cookie = _log_in(server[0], "ana", USERS["ana"])
    assert cookie, "the right password did not log in"
    return cookie


# -- where it listens ------------------------------------------------------------------------------------------
def _non_loopback_address() -> str | None:
    """An address of this machine other than loopback (the one its default route leaves from), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))           # a UDP connect sends nothing: it only picks the route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def _listening_addresses(port: int) -> set[str] | None:
    """The local addresses of the sockets listening on `port`, from Linux's /proc/net/tcp (None elsewhere)."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].is_file():
        return None
    found = set()
    for table in (path for path in tables if path.is_file()):
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:          # 0A: LISTEN
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8 else address)
    return found


def test_the_server_listens_on_this_machine_only_by_default_and_says_so(server):
    base, proc = server
    port = urllib.parse.urlsplit(base).port
    log = Path(proc.log_path).read_text()
    assert (f"listening on http://127.0.0.1:{port}/ (127.0.0.1): this machine only; other machines cannot "
            f"connect unless --address says otherwise") in log
    assert "WARNING: no login" not in log
    listening = _listening_addresses(port)
    assert listening is None or listening == {"127.0.0.1"}, listening
    address = _non_loopback_address()
    if address is not None:                        # a machine with a network: that address must not answer
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=3):
            pass


# -- who gets in -----------------------------------------------------------------------------------------------
def test_without_a_login_the_app_is_refused_and_a_logged_in_browser_gets_it(server, cookie):
    base, _ = server
    # (/autoload.js refuses too, with a 302, but Panel 1.9.4 then logs a TypeError; left out so the log stays clean)
    for path in ("/", "/?x=1", "/metadata"):
        status, headers, body = _request(base, path)
        assert status == 302 and "login" in headers["Location"] and b"token" not in body, (path, status)
    assert _log_in(base, "ana", "wrong password") == ""
    assert _log_in(base, "mallory", USERS["ana"]) == ""
    status, _, body = _request(base, "/", cookie=cookie)
    assert status == 200 and b'"token"' in body and b"bokeh" in body.lower()


def _session_token(base: str, cookie: str) -> str:
    """The session token of a fresh page of the app, which a browser sends when it opens the websocket."""
    import re
    _, _, page = _request(base, "/", cookie=cookie)
    return re.search(rb'"token":\s*"([^"]+)"', page).group(1).decode()


def _open_websocket(base: str, token: str, origin: str, cookie: str) -> str:
    """Open the app's websocket with this Origin and Cookie and return its first message; an `HTTPClientError`
    when the handshake is refused."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    async def connect() -> str:
        request = HTTPRequest(base.replace("http://", "ws://") + "/ws", headers={"Origin": origin, "Cookie": cookie})
        connection = await websocket_connect(request, subprotocols=["bokeh", token])
        try:
            return await asyncio.wait_for(connection.read_message(), 30) or ""
        finally:
            connection.close()
    # a thread of its own: an earlier test in the same process may have left an event loop running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, connect()).result()


def test_a_foreign_origin_or_a_missing_login_cannot_open_the_websocket_and_allowed_origins_can(server, cookie):
    from tornado.httpclient import HTTPClientError
    base, _ = server
    token = _session_token(base, cookie)
    for origin, with_cookie in ((FOREIGN, cookie), (f"http://{ALLOWED}:8080", cookie), (base, "")):
        with pytest.raises(HTTPClientError) as refused:
            _open_websocket(base, token, origin, with_cookie)
        assert refused.value.code == 403, (origin, bool(with_cookie))
    for origin in (base, f"http://{ALLOWED}", base.replace("127.0.0.1", "localhost")):
        assert '"msgtype": "ACK"' in _open_websocket(base, token, origin, cookie), origin


# -- no file it should not read --------------------------------------------------------------------------------
def _traversal_paths(project: tuple[Path, Path], outside: Path) -> list[str]:
    """URLs that would reach the secret file, the project's files or /etc/passwd through any route that joined
    a URL to a folder carelessly: `..`, absolute paths, encoded separators and dots, backslashes, symlinks."""
    folder, workspace = project
    secret = (outside / "secret.txt").as_posix()
    up = "../" * 12
    encoded_ups = ("..%2f", "%2e%2e/", "%2e%2e%2f", "..%2F", "%252e%252e%252f", "..%5c", "..\\")
    targets = [secret.lstrip("/"), "etc/passwd"]
    paths = []
    for prefix in ("/", "/static/", "/static/js/", "/static/extensions/panel/", "/components/",
                   "/components/panel/Column/_css/", "/components/panel.template.vanilla/VanillaTemplate/_css/",
                   "/login/", "/ws/", "/metadata/", "/autoload.js/"):
        for target in targets:
            paths.append(prefix + up + target)
            paths.extend(prefix + up.replace("../", encoded) + target for encoded in encoded_ups)
            paths.append(prefix + "%2f" + urllib.parse.quote(target, safe=""))
            paths.append(prefix + "/" + target)
        for name in ("link.txt", "img_0.png", "../images/img_0.png", "labels.sqlite"):
            paths.append(prefix + name)
        paths.append(prefix + urllib.parse.quote(str(folder / "link.txt")))
        paths.append(prefix + urllib.parse.quote(str(workspace / "labels.sqlite")))
    paths += [f"/?folder={urllib.parse.quote(secret)}", f"/static/{secret}", f"//{secret.lstrip('/')}"]
    return paths


def test_no_url_returns_a_file_outside_the_installed_static_folders(server, cookie, project, outside):
    base, _ = server
    image = (project[0] / "img_0.png").read_bytes()
    passwd = Path("/etc/passwd").read_bytes()[:64] if Path("/etc/passwd").is_file() else None
    paths = _traversal_paths(project, outside)
    for path in paths:
        for with_cookie in ("", cookie):
            status, _, body = _request(base, path, cookie=with_cookie)
            assert SECRET.encode() not in body, path
            assert image not in body, path
            assert passwd is None or passwd not in body, path
            assert status in (302, 400, 403, 404, 405) or (path.startswith("/?") and status == 200), (path, status)
    status, _, body = _request(base, "/static/js/bokeh.min.js")      # the static route itself still works
    assert status == 200 and len(body) > 100_000


def test_the_components_route_imports_no_module_a_url_names(server, outside):
    base, _ = server
    paths = ("/components/planted_module/Thing/__css__/x.css", "/components/planted_module/x/_css/y",
             "/components/planted_module.sub/x/_css/y", "/components/..planted_module/x/_css/y")
    statuses = {path: _request(base, path)[0] for path in paths}
    assert not (outside / IMPORTED).exists(), "a URL imported a module that sat beside the server"
    assert set(statuses.values()) == {404}, statuses
    # Panel's own component resources still come through (its templates' CSS)
    status, _, body = _request(base, "/components/panel.template.vanilla/VanillaTemplate/_css/vanilla.css")
    assert status == 200 and body


# -- OAuth goes to Panel ---------------------------------------------------------------------------------------
def test_oauth_options_reach_panel_and_the_app_waits_for_the_provider(project):
    proc, url = start_server(*project, options=["--oauth-provider", "github", "--oauth-key", "client-id-123",
                                                "--oauth-secret", "client-secret", "--cookie-secret", "c" * 32],
                             probe="favicon.ico", timeout=120)
    try:
        base = url.rstrip("/")
        status, headers, _ = _request(base, "/")
        assert status == 302 and headers["Location"].startswith("./login"), (status, dict(headers))
        status, headers, _ = _request(base, "/login")
        location = urllib.parse.urlsplit(headers["Location"])
        assert status == 302 and location.netloc == "github.com", (status, dict(headers))
        assert urllib.parse.parse_qs(location.query)["client_id"] == ["client-id-123"]
    finally:
        log = stop_server(proc)
    assert "login: OAuth via github" in log
    assert_no_traceback(log)


# -- options that cannot work say why ----------------------------------------------------------------------
# {tmp} is the test's own folder, where not-json.json and list.json are written first
BAD_OPTIONS = {
    "two logins": (["--basic-auth", "pw", "--oauth-provider", "github"], "give one of them"),
    "empty password": (["--basic-auth", ""], "--basic-auth is empty"),
    "missing user file": (["--basic-auth", "{tmp}/nope.json"], "no such file"),
    "user file not JSON": (["--basic-auth", "{tmp}/not-json.json"], "cannot read it as JSON"),
    "user file not an object": (["--basic-auth", "{tmp}/list.json"], "expected a JSON object"),
    "cookie secret without login": (["--cookie-secret", "x" * 32], "there is no login"),
    "oauth key without provider": (["--oauth-key", "id"], "--oauth-key only works with --oauth-provider"),
    "unknown provider": (["--oauth-provider", "myspace"], "is not one of Panel's providers"),
    "provider without secret": (["--oauth-provider", "github", "--oauth-key", "id"], "--oauth-secret"),
    "origin with scheme": (["--allow-websocket-origin", "https://lab.example.org"], "without scheme"),
    "every origin": (["--allow-websocket-origin", "*"], "any web site"),
    "origin with bad port": (["--allow-websocket-origin", "lab.example.org:https"], "Invalid port"),
}


@pytest.mark.parametrize("kind", list(BAD_OPTIONS))
def test_each_sharing_option_that_cannot_work_is_refused_with_a_message(kind, tmp_path, capsys, monkeypatch):
    import labeler.ui.serve as serve_module
    for name in ("PANEL_OAUTH_KEY", "PANEL_OAUTH_SECRET", "PANEL_COOKIE_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(serve_module, "serve", lambda *args, **kwargs: pytest.fail("the server started"))
    (tmp_path / "not-json.json").write_text("ana: secret")
    (tmp_path / "list.json").write_text('["ana", "secret"]')
    options, message = BAD_OPTIONS[kind]
    assert main(["serve", str(tmp_path), *(option.format(tmp=tmp_path) for option in options)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_a_port_in_use_is_a_message_naming_it(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err and "Traceback" not in err, err


def test_the_start_message_warns_when_other_machines_can_connect_without_a_login():
    from labeler.ui.serve import Access, exposure
    shared = "\n".join(exposure("0.0.0.0", 5006, Access()))
    assert "every network interface" in shared and "WARNING: no login" in shared
    assert "--allow-websocket-origin" in shared
    with_login = "\n".join(exposure("10.0.0.5", 5006, Access(basic_auth="pw").checked()))
    assert "other machines can connect" in with_login and "login: basic auth" in with_login
    assert "WARNING" not in with_login and "TLS" in with_login
    local = "\n".join(exposure("127.0.0.1", 5006, Access()))
    assert "this machine only" in local and "WARNING" not in local


def test_a_login_without_a_cookie_secret_gets_a_fresh_random_one(monkeypatch):
    from labeler.ui.serve import Access
    monkeypatch.delenv("PANEL_COOKIE_SECRET", raising=False)
    monkeypatch.delenv("BOKEH_COOKIE_SECRET", raising=False)
    first, second = Access(basic_auth="pw").checked(), Access(basic_auth="pw").checked()
    assert len(first.cookie_secret) >= 32 and first.cookie_secret != second.cookie_secret
    assert Access().checked().server_options() == {}
    assert Access(basic_auth="pw", cookie_secret="given").checked().server_options() == {
        "basic_auth": "pw", "cookie_secret": "given"}
