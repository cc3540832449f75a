"""The deployment files: docker-compose.yml, the Dockerfile and deploy/Caddyfile.

Reliability F7, F17 (the workers' side of the stack): SIGTERM is a soft shutdown bounded by
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT, inside the workers' stop_grace_period. The web healthcheck
is run as written against the production settings the compose file gives the web service; the
proxy serves what the web service collects and stores, and forwards the rest to gunicorn.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SITE_HOST = "crowdloop.example.org"
#: What a deployer puts in .env (the compose file refuses to start without them).
DOT_ENV = {"SITE_HOST": SITE_HOST, "POSTGRES_PASSWORD": "pg-secret", "REDIS_PASSWORD": "r-secret"}
SECRET_KEY = "k3y-for-the-deployment-tests-0123456789-abcdefghijklmnopqrstuvwxyz"


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:?message}`` and ``${NAME:-default}``; ``$$`` is a dollar."""

    def one(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        if variables.get(name):
            return variables[name]
        if op == ":?":
            raise AssertionError(f"compose refuses to start without {name}: {arg}")
        return arg if op == ":-" else ""

    pattern = r"\$\{(?P<name>\w+)(?:(?P<op>:[?-])(?P<arg>[^}]*))?\}"
    return re.sub(pattern, one, value.replace("$$", "\0")).replace("\0", "$")


def service_environment(name: str) -> dict[str, str]:
    environment = compose()["services"][name].get("environment") or {}
    return {key: interpolate(str(value), DOT_ENV) for key, value in environment.items()}


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match and duration, f"not a compose duration: {duration!r}"
    return int(match[1] or 0) * 60 + int(match[2] or 0)


def curl_request(argv: list[str]) -> tuple[str, dict[str, str]]:
    """The URL and the headers a ``curl`` command line sends."""
    assert argv[0] == "curl", argv
    headers: dict[str, str] = {}
    url = ""
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-H", "--header"):
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif not arg.startswith("-"):
            url = arg
    assert url, argv
    return url, headers


def django_answer(
    env: dict[str, str], tmp_path: Path, url: str, headers: dict[str, str], remote_addr: str
) -> dict:
    """Status and Location of one request to the app, loaded in a fresh interpreter under
    ``env``, as gunicorn would see it arrive at ``url`` (host, port and path)."""
    parts = urlsplit(url)
    headers = {"Host": parts.netloc, **headers}
    code = f"""
import json, django
django.setup()
from django.test import Client
response = Client(raise_request_exception=False).get(
    {parts.path!r}, headers={headers!r}, REMOTE_ADDR={remote_addr!r},
    SERVER_PORT={str(parts.port or 80)!r},
)
print(json.dumps({{"status": response.status_code, "location": response.get("Location", "")}}))
"""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    var = tmp_path / "var"
    var.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            **keep,
            **env,
            # The request needs no Redis or PostgreSQL: an empty SQLite file answers SELECT 1.
            "DATABASE_URL": "",
            "REDIS_URL": "",
            "SECRET_KEY": SECRET_KEY,
            "CROWDLOOP_VAR_DIR": str(var),
            "DJANGO_SETTINGS_MODULE": "config.settings",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def web_env() -> dict[str, str]:
    env = service_environment("web")
    assert env["CROWDLOOP_ENV"] == "production"
    return env


# -- the web healthcheck -----------------------------------------------------------------------


def test_the_compose_web_healthcheck_gets_200_from_the_production_settings(tmp_path):
    test = compose()["services"]["web"]["healthcheck"]["test"]
    assert test[0] == "CMD", "the healthcheck runs curl directly"
    url, headers = curl_request(test[1:])
    assert "-f" in test[2] or "--fail" in test, "curl must fail on an error status"

    answer = django_answer(web_env(), tmp_path, url, headers, remote_addr="127.0.0.1")

    assert answer["status"] == 200, answer


def test_the_dockerfile_healthcheck_gets_200_from_the_production_settings(tmp_path):
    line = next(
        line
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("HEALTHCHECK")
    )
    command = shlex.split(line.split(" CMD ", 1)[1].split("||")[0])
    url, headers = curl_request(command)

    answer = django_answer(web_env(), tmp_path, url, headers, remote_addr="127.0.0.1")

    assert answer["status"] == 200, answer


def test_through_the_proxy_site_host_is_served_over_https_and_plain_http_is_redirected(tmp_path):
    proxy = service_environment("web")["TRUSTED_PROXIES"]
    via_proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}

    page = django_answer(web_env(), tmp_path, f"http://{SITE_HOST}/", via_proxy, proxy)
    plain = django_answer(web_env(), tmp_path, f"http://{SITE_HOST}/", {}, proxy)
    stranger = django_answer(web_env(), tmp_path, "http://evil.example/", via_proxy, proxy)

    assert page["status"] == 302 and "/admin/" in page["location"], page
    assert plain["status"] == 301 and plain["location"] == f"https://{SITE_HOST}/", plain
    assert stranger["status"] == 400, stranger


# -- the proxy ---------------------------------------------------------------------------------


def caddy_blocks() -> dict[str, str]:
    """Each ``handle_path``/``handle`` block of deploy/Caddyfile by its matcher, as text."""
    text = (ROOT / "deploy" / "Caddyfile").read_text()
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    blocks: dict[str, str] = {}
    for match in re.finditer(r"^\s*(handle_path|handle)\s*([^\s{]*)\s*\{", text, re.M):
        depth, start = 1, match.end()
        end = start
        while depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        blocks[match[2] or "*"] = text[start : end - 1]
    return blocks


def mount_target(service: str, volume: str) -> str:
    for entry in compose()["services"][service]["volumes"]:
        source, target = entry.split(":")[:2]
        if source == volume:
            return target
    raise AssertionError(f"{service} does not mount {volume}")


def caddy_root(block: str) -> str:
    match = re.search(r"^\s*root\s+\*\s+(\S+)", block, re.M)
    assert match, block
    return match[1]


def test_the_proxy_serves_the_static_files_web_collects():
    web = compose()["services"]["web"]
    static_root = web_env()["STATIC_ROOT"]
    volume = next(v.split(":")[0] for v in web["volumes"] if v.split(":")[1] == static_root)
    assert "collectstatic" in web["command"]

    block = caddy_blocks()["/static/*"]

    assert caddy_root(block) == mount_target("proxy", volume)
    assert "file_server" in block


def test_the_proxy_serves_media_from_media_root_and_nothing_else_of_the_data_volume():
    env = web_env()
    data = mount_target("web", "crowdloop-data")
    media = Path(env["MEDIA_ROOT"]).relative_to(data)
    assert not Path(env["ARTIFACT_ROOT"]).is_relative_to(env["MEDIA_ROOT"])

    block = caddy_blocks()["/media/*"]

    assert caddy_root(block) == f"{mount_target('proxy', 'crowdloop-data')}/{media}"
    assert "browse" not in block
    assert set(caddy_blocks()) == {"/static/*", "/media/*", "*"}


def test_the_proxy_passes_everything_else_to_gunicorn_for_site_host():
    services = compose()["services"]
    assert "--bind 0.0.0.0:8000" in services["web"]["command"]
    assert re.search(r"^\{\$SITE_HOST\}\s*\{", (ROOT / "deploy/Caddyfile").read_text(), re.M)
    assert services["proxy"]["environment"]["SITE_HOST"].startswith("${SITE_HOST")

    assert re.search(r"^\s*reverse_proxy\s+web:8000\s*$", caddy_blocks()["*"], re.M)
    assert "ports" not in services["web"], "only the proxy is published"


def test_web_trusts_forwarded_headers_from_the_proxys_fixed_address_only():
    services = compose()["services"]
    address = services["proxy"]["networks"]["default"]["ipv4_address"]
    subnet = compose()["networks"]["default"]["ipam"]["config"][0]["subnet"]

    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    assert web_env()["TRUSTED_PROXIES"] == address
    assert web_env()["ALLOWED_HOSTS"] == SITE_HOST
    assert web_env()["CSRF_TRUSTED_ORIGINS"] == f"https://{SITE_HOST}"


# -- the workers' shutdown ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["worker", "worker-gpu"])
def test_a_worker_stopped_by_compose_gets_a_soft_shutdown_inside_its_grace_period(name, settings):
    service = compose()["services"][name]

    assert service_environment(name)["REMAP_SIGTERM"] == "SIGQUIT"
    assert service["command"].startswith("celery "), "celery must be PID 1 to get SIGTERM"
    timeouts = [settings.CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT]
    example = ROOT / ".env.example"
    for line in example.read_text().splitlines():
        if line.startswith("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT="):
            timeouts.append(float(line.split("=", 1)[1]))
    # Ten seconds for the cold shutdown after the soft one: cancel, requeue, close.
    assert seconds(service["stop_grace_period"]) >= max(timeouts) + 10


def test_the_web_command_hands_sigterm_to_gunicorn():
    command = compose()["services"]["web"]["command"]
    assert "exec gunicorn" in command


def test_the_soft_shutdown_timeout_reaches_the_celery_config_and_a_bad_one_is_refused():
    from tests.settings_env import settings_in_subprocess

    code = "from config.celery import app; print(app.conf.worker_soft_shutdown_timeout)"
    env = {**os.environ, "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT": "12.5"}
    env.pop("CROWDLOOP_ENV", None)
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "12.5"

    for bad in ("soon", "-1"):
        refused = settings_in_subprocess(
            {"CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT": bad}, ["CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"]
        )
        assert refused.returncode != 0
        assert "ImproperlyConfigured" in refused.stderr
        assert "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT" in refused.stderr


def test_a_worker_without_the_sigterm_remap_is_warned_at_start():
    from config.celery import sigterm_warning

    assert sigterm_warning(soft_shutdown_timeout=60, remap_sigterm="SIGQUIT") is None
    assert sigterm_warning(soft_shutdown_timeout=0, remap_sigterm=None) is None
    warning = sigterm_warning(soft_shutdown_timeout=60, remap_sigterm=None)
    assert warning and "REMAP_SIGTERM" in warning and "60 s" in warning


# -- docker compose itself ---------------------------------------------------------------------


def test_docker_compose_accepts_the_file_with_a_filled_in_env(tmp_path):
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / "deploy").mkdir()
    shutil.copy(ROOT / "deploy" / "Caddyfile", tmp_path / "deploy" / "Caddyfile")
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in DOT_ENV.items()))

    result = subprocess.run(
        [docker, "compose", "config", "--quiet"], cwd=tmp_path, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
