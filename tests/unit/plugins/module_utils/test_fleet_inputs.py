"""The fleet model's stricter input checks (issue 18, item 7): what reaches nginx, prometheus.yml, the health
check's Python and the Docker engine is whitelisted, and the published address defaults to the host's own."""

from __future__ import annotations

import copy
import secrets

import pytest

from ansible_collections.fleetops.mcp.plugins.module_utils import _backup, _fleet

GOOD = [
    {"name": "reference", "image": "fleetops/mcp-reference:1.0.0", "host_port": 18080, "replicas": 2,
     "volumes": [{"source": "reference-data", "target": "/data", "writable": True},
                 {"source": "/srv/mcp/reference/config", "target": "/config"}],
     "labels": {"com.example.team": "platform"}, "tmpfs": ["/tmp:rw,noexec,nosuid,size=64m"]},
    {"name": "memory", "image": "fleetops/mcp-memory:1.0.0", "transport": "stdio", "host_port": 18300,
     "stdio_command": ["mcp-server-memory"], "failover": {"primary": "srv-1", "standby": "srv-2"}},
]
# Spaces, quotes, ';', '{', '$', a newline, '..', '%', '?' and '#'.
BAD_PATHS = ["/m cp", "/mcp'", '/mcp"', "/mcp;return 444", "/mcp{", "/mcp$host", "/mcp\nproxy_pass x", "/a/../b",
             "/..", "/mcp%s", "/mcp?x=1", "/mcp#x", "mcp", ""]


def with_change(index, **change):
    servers = copy.deepcopy(GOOD)
    servers[index].update(change)
    return servers


def messages(servers, docker_hosts=None):
    return " | ".join(_fleet.validate(servers, docker_hosts))


def test_the_good_fleet_passes():
    assert _fleet.validate(GOOD) == []
    assert _fleet.validate(GOOD, ["srv-1", "srv-2"]) == []


@pytest.mark.parametrize("path", BAD_PATHS)
@pytest.mark.parametrize("field", ["path", "metrics_path", "healthcheck.path"])
def test_url_paths_are_whitelisted(field, path):
    if field == "healthcheck.path":
        servers = with_change(0, healthcheck={"path": path})
    else:
        servers = with_change(0, **{field: path})
    if field == "metrics_path" and path == "":
        assert _fleet.validate(servers) == []  # empty: no metrics
        return
    found = messages(servers)
    assert "mcp server 'reference': %s %r" % (field, path) in found, found


@pytest.mark.parametrize("path", ["/mcp", "/v1/mcp-server_2.x~", "/"])
def test_plain_url_paths_pass(path):
    assert _fleet.validate(with_change(0, path=path, metrics_path=path, healthcheck={"path": path})) == []


@pytest.mark.parametrize("source", ["/var/run/docker.sock", "/run/docker.sock", "/", "/srv/../etc", "/etc",
                                    "/run/containerd/containerd.sock", "/var/lib/docker/volumes", "/proc/1",
                                    "/srv/./data", "//", "/srv/a b", "/srv/a:/etc", "/srv/$HOME", "/srv/x\n"])
def test_dangerous_volume_sources_are_refused(source):
    servers = with_change(0, volumes=[{"source": source, "target": "/data"}])
    found = messages(servers)
    assert "mcp server 'reference': volumes[0].source %r" % source in found, found


@pytest.mark.parametrize("target", ["/", "/data/../etc", "/run/secrets", "/da ta", "/data:rw", "data"])
def test_bad_volume_targets_are_refused(target):
    found = messages(with_change(0, volumes=[{"source": "data", "target": target}]))
    assert "mcp server 'reference': volumes[0].target %r" % target in found, found


@pytest.mark.parametrize("source", ["re;f", "ref data", "../x", "-x"])
def test_bad_volume_names_are_refused(source):
    found = messages(with_change(0, volumes=[{"source": source, "target": "/data"}]))
    assert "volumes[0].source %r must be an absolute host path or a volume name" % source in found


@pytest.mark.parametrize(("first", "second"), [("/srv/data", "srv-data"), ("/srv/Data", "/srv/data"),
                                               ("data", "/data"), ("my.data", "my_data")])
def test_two_writable_volumes_on_one_replica_directory_are_refused(first, second):
    volumes = [{"source": first, "target": "/a", "writable": True}, {"source": second, "target": "/b", "writable": True}]
    found = messages(with_change(0, volumes=volumes))
    assert "volumes[0].source %r and volumes[1].source %r map to the same replica directory" % (first, second) in found
    # The directory the check compares is the one failover replicas and backup items are named after.
    assert _backup._safe(first) == _backup._safe(second) == _fleet.safe_name(first)
    volumes[1]["writable"] = False
    assert _fleet.validate(with_change(0, volumes=volumes)) == []


@pytest.mark.parametrize("bind", ["0.0.0.0:80", "localhost", "srv-1", "[::1]", "256.1.1.1", "", 8080, "10.0.0.1\n"])
def test_bad_bind_addresses_are_refused(bind):
    found = messages(with_change(0, bind_address=bind))
    assert "mcp server 'reference': bind_address %r must be an IPv4 or IPv6 address" % (bind,) in found, found


@pytest.mark.parametrize("bind", ["0.0.0.0", "10.20.0.21", "::", "fd00::1"])
def test_explicit_bind_addresses_are_kept(bind):
    assert _fleet.validate(with_change(0, bind_address=bind)) == []
    assert _fleet.normalize(with_change(0, bind_address=bind), "srv-1", "10.0.0.11")[0]["bind_address"] == bind


def test_the_default_bind_address_is_the_hosts_fleet_address():
    assert _fleet.DEFAULTS["bind_address"] is None
    assert _fleet.normalize(GOOD)[0]["bind_address"] is None
    fleet = _fleet.normalize(GOOD, "srv-1", "10.0.0.11")
    assert [s["bind_address"] for s in fleet] == ["10.0.0.11", "10.0.0.11"]
    with pytest.raises(ValueError, match="mcp server 'reference': bind_address is unset and the host's fleet "
                                         "address 'srv-1' is not an IP address; set fleetops_address"):
        _fleet.normalize(GOOD, "srv-1", "srv-1")


@pytest.mark.parametrize(("tmpfs", "expected"), [
    (["/tmp:rw,noexec\n--privileged"], "tmpfs[0] options"),
    (["/tmp:rw,exec,size=1g;rm"], "tmpfs[0] options"),
    (["/tmp:uid=0,mode=4777x"], "tmpfs[0] options"),
    (["/t mp"], "tmpfs[0] path '/t mp'"),
    (["/tmp/../etc:rw"], "tmpfs[0] path '/tmp/../etc'"),
    (["/:rw"], "tmpfs[0] path '/' is reserved"),
    (["/run/secrets"], "tmpfs[0] path '/run/secrets' is reserved"),
    ([{"/tmp": "rw"}], "tmpfs[0] must be a 'path[:options]' string"),
    ("/tmp", "tmpfs must be a list"),
])
def test_tmpfs_injection_is_refused(tmpfs, expected):
    found = messages(with_change(0, tmpfs=tmpfs))
    assert "mcp server 'reference': " + expected in found, found


def test_plain_tmpfs_mounts_pass():
    assert _fleet.validate(with_change(0, tmpfs=["/tmp", "/run/app:rw,nosuid,nodev,size=8m,mode=0700,uid=10001"])) == []


@pytest.mark.parametrize(("labels", "expected"), [
    ({"a=b": "x"}, "label key 'a=b'"),
    ({"a\nb": "x"}, "label key 'a\\nb'"),
    ({"team name": "x"}, "label key 'team name'"),
    ({"": "x"}, "label key ''"),
    ({"com.docker.compose.project": "x"}, "label key 'com.docker.compose.project' uses a reserved prefix"),
    ({"org.fleetops.mcp.managed": "false"}, "label key 'org.fleetops.mcp.managed' uses a reserved prefix"),
    ({"io.docker.x": "x"}, "label key 'io.docker.x' uses a reserved prefix"),
    ({"team": "a\nb"}, "label 'team' value must be at most 1024 characters without newlines"),
    ({"team": "x" * 1025}, "label 'team' value must be at most 1024 characters"),
    ({"team": ["a"]}, "label 'team' must have a string value"),
    ({"team": None}, "label 'team' must have a string value"),
])
def test_label_injection_is_refused(labels, expected):
    found = messages(with_change(0, labels=labels))
    assert "mcp server 'reference': " + expected in found, found


@pytest.mark.parametrize("host", ["srv 1", "srv-1;reboot", "-srv", "srv\n1", "srv/1"])
def test_invalid_failover_host_names_are_refused(host):
    found = messages(with_change(1, failover={"primary": host, "standby": "srv-2"}))
    assert "mcp server 'memory': failover.primary %r is not an inventory host name" % host in found, found


def test_invalid_hosts_entries_are_refused():
    found = messages(with_change(0, hosts=["srv-1", "srv 2"]))
    assert "mcp server 'reference': hosts must be a list of inventory host names" in found


def test_hosts_outside_the_docker_hosts_group_are_refused():
    found = messages(with_change(1, failover={"primary": "srv-1", "standby": "lb-1"}), ["srv-1", "srv-2"])
    assert "mcp server 'memory': failover.standby names 'lb-1', which is not a Docker host (the docker_hosts group)" \
        in found
    found = messages(with_change(0, hosts=["srv-3"]), ["srv-1", "srv-2"])
    assert "mcp server 'reference': hosts names 'srv-3', which is not a Docker host" in found
    # Without the group, only the names' form is checked (the other roles' callers).
    assert _fleet.validate(with_change(0, hosts=["srv-3"])) == []


def test_a_random_label_value_passes():
    assert _fleet.validate(with_change(0, labels={"com.example.build": secrets.token_urlsafe(32)})) == []
