"""The daemon.json checker docker_host installs for engines without dockerd --validate."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[3] / "roles" / "docker_host" / "files" / "validate-docker-daemon-json"

GOOD = {
    "data-root": "/var/lib/docker",
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "3"},
    "live-restore": True,
    "no-new-privileges": True,
    "userland-proxy": False,
    "icc": False,
    "default-ulimits": {"nofile": {"Name": "nofile", "Soft": 65536, "Hard": 65536}},
    "registry-mirrors": ["https://mirror.example"],
}


def check(tmp_path, content: str):
    path = tmp_path / "daemon.json"
    path.write_text(content, encoding="utf-8")
    return subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, check=False)


def test_accepts_the_role_defaults(tmp_path):
    result = check(tmp_path, json.dumps(GOOD))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"no-such-directive": True}, "unknown key 'no-such-directive'"),
        ({"live-restore": "yes"}, "live-restore must be true or false"),
        ({"log-opts": {"max-size": "lots", "max-file": "3"}}, "max-size 'lots' is not a size"),
        ({"log-opts": {"max-size": "10m", "max-file": "0"}}, "max-file '0' must be a whole number"),
        ({"log-opts": {"max-size": 10}}, "log-opts must be an object of strings"),
        ({"log-driver": "journald"}, "only apply to the json-file and local drivers"),
        ({"data-root": "relative/path"}, "data-root must be an absolute path"),
        ({"mtu": "1500"}, "mtu must be a whole number"),
        ({"dns": "1.1.1.1"}, "dns must be a list"),
        ({"default-ulimits": {"nofile": {"Name": "nofile", "Soft": 10, "Hard": 5}}}, "default-ulimits nofile"),
    ],
)
def test_rejects_bad_values_naming_them(tmp_path, change, message):
    result = check(tmp_path, json.dumps({**GOOD, **change}))
    assert result.returncode == 1
    assert message in result.stderr


def test_rejects_broken_json_and_non_objects(tmp_path):
    result = check(tmp_path, '{"live-restore": true,,}')
    assert result.returncode == 1 and "not valid JSON" in result.stderr
    result = check(tmp_path, "[1, 2]")
    assert result.returncode == 1 and "top level must be a JSON object" in result.stderr


def test_usage_error(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "usage" in result.stderr
