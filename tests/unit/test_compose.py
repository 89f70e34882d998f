"""The ops deployment (deploy/docker-compose.yml + Dockerfile) checked by structure.

No Docker engine exists on development and CI machines, so nothing is built or started here. The
compose file is read as YAML (anchors and ``<<`` merges resolved by the loader), ``${VAR:-default}``
is resolved to its default (the values ops get with no env file), and the result is checked against
the code: the module each service runs, its settings fields, its port, the topic tool's CLI.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# service -> (module it runs, settings class, HTTP port)
SERVICES: dict[str, tuple[str, str, int]] = {
    "intake": ("services.intake", "services.intake.settings:IntakeSettings", 8001),
    "printing": ("services.printing", "services.printing.settings:PrintingSettings", 8002),
    "courier": ("services.courier", "services.courier.settings:CourierSettings", 8003),
    "notify": ("services.notify", "services.notify.settings:NotifySettings", 8004),
}
SANDBOX = ("sandbox", "sandbox.settings:SandboxSettings", 8090)
APP_SERVICES = (*SERVICES, "sandbox", "topics")
LONG_RUNNING = ("kafka", "postgres", *SERVICES, "sandbox")
ALL_SERVICES = {"kafka", "postgres", "topics", *SERVICES, "sandbox"}

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with no variable set; ``$$`` is a literal ``$``."""

    def resolve(m: re.Match[str]) -> str:
        op, arg = m.group("op"), m.group("arg")
        assert op in (":-", "-"), f"{m.group(0)}: every variable needs a default (no env file)"
        return arg

    parts = value.split("$$")
    return "$".join(_VAR.sub(resolve, part) for part in parts)


def _resolve(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _resolve(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v) for v in node]
    if isinstance(node, str):
        return _interpolate(node)
    return node


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    resolved = _resolve(raw)
    return resolved["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict of strings (compose allows a list or a map)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    out = {}
    for key, value in env.items():
        if isinstance(value, bool):
            value = str(value).lower()
        out[key] = "" if value is None else str(value)
    return out


def _settings_class(path: str) -> type[BaseSettings]:
    module, name = path.split(":")
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, BaseSettings)
    return cls


def _env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variable names a settings class reads (upper-cased)."""
    prefix = cls.model_config.get("env_prefix", "") or ""
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        if alias is None:
            names.add(f"{prefix}{field_name}".upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:  # AliasChoices
            names.update(str(c).upper() for c in alias.choices if isinstance(c, str))
    return names


def _published(service: dict[str, Any]) -> dict[int, str]:
    """container port -> host part of the mapping ('' when compose picks a host port)."""
    out: dict[int, str] = {}
    for spec in service.get("ports", []):
        if isinstance(spec, dict):
            out[int(spec["target"])] = str(spec.get("published", ""))
            continue
        spec = str(spec).split("/")[0]
        host, _, container = spec.rpartition(":")
        out[int(container)] = host.rpartition(":")[2] if host else ""
    return out


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    assert isinstance(command, list), "command must be in exec (list) form"
    return [str(c) for c in command]


def _healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


# ---------------------------------------------------------------------------------- the file


def test_compose_spec_has_no_version_key_and_every_service(raw: dict[str, Any]) -> None:
    assert "version" not in raw, "the compose spec has no `version:` key"
    assert set(raw["services"]) == ALL_SERVICES


def test_common_parts_come_from_anchors() -> None:
    text = COMPOSE_FILE.read_text()
    assert "x-service: &service" in text
    assert text.count("<<: *service\n") == len(SERVICES)


def test_named_volumes_hold_kafka_and_postgres_data(
    raw: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(raw.get("volumes") or {})
    mounts = {
        name: {str(v).split(":")[0]: str(v).split(":")[1] for v in services[name]["volumes"]}
        for name in ("kafka", "postgres")
    }
    assert declared >= set(mounts["kafka"]) | set(mounts["postgres"])
    kafka_dirs = _env(services["kafka"])["KAFKA_LOG_DIRS"]
    assert kafka_dirs in mounts["kafka"].values(), "Kafka's log.dirs must be on the named volume"
    assert "/var/lib/postgresql/data" in mounts["postgres"].values()


# ---------------------------------------------------------------------------------- the image


def test_app_services_share_one_image_built_from_the_root_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    images = set()
    for name in APP_SERVICES:
        build = services[name].get("build")
        assert isinstance(build, dict), f"{name}: no build section"
        assert build["context"] == "..", f"{name}: build context must be the repository root"
        dockerfile = build.get("dockerfile", "Dockerfile")
        assert (COMPOSE_FILE.parent / build["context"] / dockerfile).resolve() == DOCKERFILE
        images.add(services[name]["image"])
    assert len(images) == 1, f"one image for every app service, got {images}"
    assert DOCKERFILE.is_file()


@pytest.mark.parametrize(("name", "module"), [(n, s[0]) for n, s in SERVICES.items()])
def test_each_service_runs_its_module(
    services: dict[str, dict[str, Any]], name: str, module: str
) -> None:
    assert _command(services[name]) == ["python", "-m", module]
    assert importlib.util.find_spec(f"{module}.__main__") is not None


def test_sandbox_runs_the_sandbox(services: dict[str, dict[str, Any]]) -> None:
    assert _command(services["sandbox"]) == ["python", "-m", "sandbox"]
    assert importlib.util.find_spec("sandbox.__main__") is not None


def test_topics_runs_the_topic_tool_once_after_kafka_is_healthy(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.kafka import admin

    topics = services["topics"]
    command = _command(topics)
    assert command[:4] == ["python", "-m", "shared.kafka.admin", "create-topics"]

    # Run the tool's own CLI on the compose arguments, with the broker calls recorded instead.
    calls: list[tuple[Any, ...]] = []

    async def wait_for_broker(bootstrap: str, *args: Any, **kwargs: Any) -> None:
        calls.append(("wait", bootstrap))

    async def create_topics(
        bootstrap: str, partitions: int, *args: Any, **kwargs: Any
    ) -> list[str]:
        calls.append(("create", bootstrap, partitions, kwargs.get("prefix", "")))
        return []

    # As in the container: no test-run variables in the environment.
    for var in ("KAFKA_TOPIC_PREFIX", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC_PARTITIONS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(admin, "wait_for_broker", wait_for_broker)
    monkeypatch.setattr(admin, "create_topics", create_topics)
    assert admin.main(command[3:]) == 0
    assert calls[0] == ("wait", "kafka:9092")
    # Production topics are named exactly as the contract says: no test-run prefix.
    assert calls[1] == ("create", "kafka:9092", 6, "")

    assert not _env(topics).get("KAFKA_TOPIC_PREFIX")
    assert str(topics.get("restart", "no")) == "no", "a one-shot must not be restarted"
    assert "healthcheck" not in topics
    assert topics["depends_on"] == {"kafka": {"condition": "service_healthy"}}


# ---------------------------------------------------------------------------------- health, restart


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_a_healthcheck_and_restart(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    health = service.get("healthcheck")
    assert health, f"{name}: no healthcheck"
    assert not health.get("disable", False)
    for key in ("test", "interval", "retries"):
        assert health.get(key), f"{name}: healthcheck without {key}"
    assert health["test"][0] in ("CMD", "CMD-SHELL")
    assert service.get("restart") == "unless-stopped"


@pytest.mark.parametrize(("name", "port"), [(n, s[2]) for n, s in SERVICES.items()])
def test_service_healthcheck_asks_its_own_health_endpoint(
    services: dict[str, dict[str, Any]], name: str, port: int
) -> None:
    text = _healthcheck_text(services[name])
    assert "/health" in text
    assert "curl" not in text and "wget" not in text, "python:3.11-slim has neither"
    # The check reaches the port the service listens on: literal, or read from HTTP_PORT.
    assert str(port) in text or (
        "HTTP_PORT" in text and _env(services[name])["HTTP_PORT"] == str(port)
    )


def test_infrastructure_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    kafka = _healthcheck_text(services["kafka"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in kafka
    assert "localhost:9092" in kafka
    assert "pg_isready" in _healthcheck_text(services["postgres"])
    sandbox = _healthcheck_text(services["sandbox"])
    assert f"127.0.0.1:{SANDBOX[2]}/sandbox/health" in sandbox


@pytest.mark.parametrize("name", SERVICES)
def test_services_wait_for_postgres_and_the_topics(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    depends = services[name]["depends_on"]
    assert depends["postgres"] == {"condition": "service_healthy"}
    assert depends["topics"] == {"condition": "service_completed_successfully"}


def test_every_service_healthy_condition_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            if rule.get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}"


# ---------------------------------------------------------------------------------- ports, env


def test_http_ports_are_published(services: dict[str, dict[str, Any]]) -> None:
    expected = {name: port for name, (_, _, port) in SERVICES.items()} | {"sandbox": SANDBOX[2]}
    for name, port in expected.items():
        assert _published(services[name]) == {port: str(port)}, name
    for name in ("kafka", "postgres", "topics"):
        assert not services[name].get("ports"), f"{name} must not be published on the host"


@pytest.mark.parametrize(("name", "spec"), SERVICES.items())
def test_service_environment(
    services: dict[str, dict[str, Any]], name: str, spec: tuple[str, str, int]
) -> None:
    _, settings_path, port = spec
    env = _env(services[name])
    pg = _env(services["postgres"])
    assert env["HTTP_HOST"] == "0.0.0.0"
    assert env["HTTP_PORT"] == str(port)
    default_port = _settings_class(settings_path).model_fields["http_port"].default
    assert default_port == port, "compose and the service's settings disagree on the port"
    # Test-run namespaces stay empty in a deployment (topics and groups named as in the contract).
    assert not env.get("KAFKA_TOPIC_PREFIX") and not env.get("KAFKA_GROUP_PREFIX")
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    url = urlparse(env["DATABASE_URL"])
    assert url.scheme in ("postgresql", "postgres")
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert (url.username, url.password, url.path.lstrip("/")) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )


def test_postgres(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:15")
    env = _env(postgres)
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == ("ketanmu",) * 3


def test_kafka_is_a_single_kraft_node_without_auto_create(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.1\.\d+", kafka["image"]), kafka["image"]
    env = _env(kafka)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:9093"
    listeners = env["KAFKA_LISTENERS"].split(",")
    assert any(lst.startswith("PLAINTEXT://") and lst.endswith(":9092") for lst in listeners)
    assert any(lst.startswith("CONTROLLER://") and lst.endswith(":9093") for lst in listeners)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key


def test_partners_are_the_sandbox(services: dict[str, dict[str, Any]]) -> None:
    courier = _env(services["courier"])
    notify = _env(services["notify"])
    sandbox = _env(services["sandbox"])
    urls = {
        "JNT_BASE_URL": courier["JNT_BASE_URL"],
        "POS_BASE_URL": courier["POS_BASE_URL"],
        "WHATSAPP_BASE_URL": notify["WHATSAPP_BASE_URL"],
    }
    sandbox_port = int(sandbox["SANDBOX_PORT"])
    local_defaults = {
        name: field.default
        for path in (SERVICES["courier"][1], SERVICES["notify"][1])
        for name, field in _settings_class(path).model_fields.items()
    }
    for key, value in urls.items():
        url = urlparse(value)
        assert (url.scheme, url.hostname, url.port) == ("http", "sandbox", sandbox_port), key
        # Same path as the local default (the sandbox serves /jnt, /pos, /whatsapp).
        assert url.path == urlparse(local_defaults[key.lower()]).path, key


def test_intake_and_notify_reach_the_same_whatsapp_app(services: dict[str, dict[str, Any]]) -> None:
    """Intake answers applicants and verifies Meta's inbound webhooks; notify sends the messages
    and verifies the status webhooks: one WhatsApp app, so every WhatsApp setting both read
    (shared/whatsapp/settings.py) is passed to both, from the same variable."""
    from shared.whatsapp.settings import WhatsAppSettings

    wanted = {"WHATSAPP_BASE_URL", "WHATSAPP_PHONE_NUMBER_ID", "WHATSAPP_ACCESS_TOKEN",
              "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN"}
    assert wanted <= _env_names(WhatsAppSettings)
    intake, notify = _env(services["intake"]), _env(services["notify"])
    for key in wanted:
        assert key in intake and key in notify, key
        assert intake[key] == notify[key], key
    base = urlparse(intake["WHATSAPP_BASE_URL"])
    assert base.hostname not in ("127.0.0.1", "localhost"), "a container's loopback is itself"


def test_operator_secrets_can_be_set_and_default_to_the_local_ones(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ops set INTAKE_OPERATORS and PRINTING_OPERATOR_TOKENS in the env file; unset, compose
    passes "" and the services start with their local defaults instead of failing on bad JSON."""
    intake, printing = _env(services["intake"]), _env(services["printing"])
    assert intake["INTAKE_OPERATORS"] == "" and printing["PRINTING_OPERATOR_TOKENS"] == ""
    for key in ("INTAKE_OPERATORS", "PRINTING_OPERATOR_TOKENS"):
        monkeypatch.setenv(key, "")
    intake_settings = _settings_class(SERVICES["intake"][1])()
    printing_settings = _settings_class(SERVICES["printing"][1])()
    assert [o.id for o in intake_settings.intake_operators] == ["dev-operator", "dev-supervisor"]
    assert printing_settings.printing_operator_tokens == {}
    monkeypatch.setenv("PRINTING_OPERATOR_TOKENS", '{"t0k3n-for-budi": "budi"}')
    assert _settings_class(SERVICES["printing"][1])().printing_operator_tokens == {
        "t0k3n-for-budi": "budi"}


@pytest.mark.parametrize(("name", "spec"), SERVICES.items())
def test_each_service_starts_with_the_compose_environment_alone(
    services: dict[str, dict[str, Any]], name: str, spec: tuple[str, str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no env file, every variable compose passes (many of them "") gives valid settings."""
    for key, value in _env(services[name]).items():
        monkeypatch.setenv(key, value)
    _settings_class(spec[1])()


def test_what_differs_per_office_can_be_set(services: dict[str, dict[str, Any]]) -> None:
    """The pickup address the couriers get, the office's day and capacity, the public edge."""
    courier, intake = _env(services["courier"]), _env(services["intake"])
    office = {f.upper() for f in _settings_class(SERVICES["courier"][1]).model_fields
              if f.startswith("office_")}
    assert {"OFFICE_NAME", "OFFICE_PHONE", "OFFICE_UTC_OFFSET_HOURS"} <= office
    assert office <= set(courier), sorted(office - set(courier))
    assert {"OFFICE_TIMEZONE", "DAILY_QUOTA_DEFAULT", "DAILY_QUOTA", "QUOTA_OVERRIDES",
            "TRUST_FORWARDED_FOR", "REGISTRATION_MAX_PER_CLIENT_HOUR", "PUBLIC_BASE_URL"} <= set(
        intake)


def test_sandbox_environment_and_callbacks_reach_the_courier(
    services: dict[str, dict[str, Any]],
) -> None:
    sandbox = _env(services["sandbox"])
    assert sandbox["SANDBOX_HOST"] == "0.0.0.0"
    assert sandbox["SANDBOX_PORT"] == str(SANDBOX[2])
    url = urlparse(sandbox["SANDBOX_COURIER_URL"])
    assert (url.hostname, url.port) == ("courier", int(_env(services["courier"])["HTTP_PORT"]))


def test_partner_credentials_agree_between_sandbox_and_services(
    services: dict[str, dict[str, Any]],
) -> None:
    sandbox = _env(services["sandbox"])
    for name in ("courier", "intake", "notify"):
        env = _env(services[name])
        shared = set(env) & set(sandbox)
        assert shared, f"{name} and the sandbox share no credential"
        for key in shared:
            assert env[key] == sandbox[key], f"{key} differs between {name} and the sandbox"


@pytest.mark.parametrize(
    ("name", "settings_path"),
    [(n, s[1]) for n, s in SERVICES.items()] + [("sandbox", SANDBOX[1])],
)
def test_every_env_var_is_a_settings_field(
    services: dict[str, dict[str, Any]], name: str, settings_path: str
) -> None:
    # The settings ignore unknown variables (extra="ignore"), so a typo would silently do nothing.
    known = _env_names(_settings_class(settings_path))
    unknown = {key for key in _env(services[name]) if key.upper() not in known}
    assert not unknown, f"{name}: not settings fields: {sorted(unknown)}"


def test_env_name_check_catches_a_typo() -> None:
    courier = _env_names(_settings_class(SERVICES["courier"][1]))
    assert "JNT_BASE_URL" in courier and "JNT_BASE_ULR" not in courier
    sandbox = _env_names(_settings_class(SANDBOX[1]))
    assert "SANDBOX_COURIER_URL" in sandbox and "COURIER_URL" not in sandbox


def test_interpolation_resolves_defaults() -> None:
    assert _interpolate("${A:-x:y}/${B-z}") == "x:y/z"
    assert _interpolate("pg_isready -U $${POSTGRES_USER}") == "pg_isready -U ${POSTGRES_USER}"
    with pytest.raises(AssertionError):
        _interpolate("${NO_DEFAULT}")


# ---------------------------------------------------------------------------------- Dockerfile


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    instructions = _instructions()
    froms = [rest for kw, rest in instructions if kw == "FROM"]
    assert len(froms) >= 2, "multi-stage: build wheels, then a slim runtime"
    args = dict(rest.split("=", 1) for kw, rest in instructions if kw == "ARG" and "=" in rest)
    base = froms[-1].split()[0]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), base)
    assert base.startswith("python:3.11") and "slim" in base, base
    envs = " ".join(rest for kw, rest in instructions if kw == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in envs and "PYTHONUNBUFFERED=1" in envs
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime must not be root"
    copies = " ".join(rest for kw, rest in instructions if kw == "COPY")
    assert "pyproject.toml" in copies
    assert any(kw == "RUN" and "pip" in rest and "install" in rest for kw, rest in instructions)


def test_dockerfile_default_command_prints_usage() -> None:
    instructions = _instructions()
    cmds = [rest for kw, rest in instructions if kw == "CMD"]
    assert len(cmds) == 1
    cmd = json.loads(cmds[0])  # exec form: signals reach the process, no shell
    assert cmd[0] == "python"
    entrypoints = [rest for kw, rest in instructions if kw == "ENTRYPOINT"]
    # compose's `command: ["python", "-m", ...]` replaces CMD; an ENTRYPOINT would prefix it.
    assert not entrypoints or json.loads(entrypoints[-1])[0] in ("tini", "/usr/bin/tini")
    assert "services.intake" in cmds[0] and "sandbox" in cmds[0]


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    lines = [
        ln.strip()
        for ln in DOCKERIGNORE.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    allow_list = lines[0] == "*"
    for path in (".venv", ".git", ".local"):
        assert allow_list or path in lines or f"{path}/" in lines, path
    if allow_list:
        for package in ("pyproject.toml", "shared", "services", "sandbox"):
            assert any(ln.rstrip("/") == f"!{package}" for ln in lines), package
