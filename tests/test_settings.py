import os
from pathlib import Path

import pytest

from snailjob import ConfigurationError, Settings
from snailjob.settings import env_file_message, find_env_file


def test_defaults_match_013():
    s = Settings.load(env_file=None)
    assert s.snail_server_host == "127.0.0.1" and s.snail_server_port == 17888
    assert s.snail_host_port == 17889
    assert s.snail_namespace == "764d604ec6fc45f68cd92514c40e9e1a"
    assert s.snail_group_name == "snail_job_demo_group"
    assert s.label_dict == {"env": "dev", "app": "demo", "state": "up"}


def test_environment_names(monkeypatch):
    monkeypatch.setenv("SNAIL_SERVER_HOST", "10.1.2.3")
    monkeypatch.setenv("SNAIL_SERVER_PORT", "19999")
    monkeypatch.setenv("SNAIL_GROUP_NAME", "g1")
    monkeypatch.setenv("SNAIL_LABELS", "zone:a")
    monkeypatch.setenv("snail_log_level", "debug")
    s = Settings.load(env_file=None)
    assert (s.snail_server_host, s.snail_server_port, s.snail_group_name) == ("10.1.2.3", 19999, "g1")
    assert s.label_dict == {"zone": "a", "state": "up"}
    assert s.snail_log_level == "DEBUG"


def test_dotenv_read_when_loaded(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("SNAIL_NAMESPACE=ns-from-dotenv\nSNAIL_HOST_PORT=18000\n")
    s = Settings.load(env_file=str(env))
    assert s.snail_namespace == "ns-from-dotenv" and s.snail_host_port == 18000
    monkeypatch.setenv("SNAIL_NAMESPACE", "ns-from-env")
    assert Settings.load(env_file=str(env)).snail_namespace == "ns-from-env"


@pytest.mark.parametrize("name,value,fragment", [
    ("SNAIL_SERVER_PORT", "abc", "SNAIL_SERVER_PORT='abc'"),
    ("SNAIL_SERVER_PORT", "70000", "SNAIL_SERVER_PORT"),
    ("SNAIL_LOG_LEVEL", "LOUD", "SNAIL_LOG_LEVEL"),
    ("SNAIL_LABELS", "novalue", "SNAIL_LABELS"),
    ("SNAIL_HOST_ID", "a@b", "SNAIL_HOST_ID"),
    ("SNAIL_HEARTBEAT_INTERVAL", "60", "SNAIL_HEARTBEAT_INTERVAL"),
])
def test_bad_value_names_the_variable(monkeypatch, name, value, fragment):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        Settings.load(env_file=None)
    assert fragment in str(info.value)


def test_a_negative_max_running_is_refused(monkeypatch):
    """A negative cap would silently run nothing: refused, naming the variable (0 means no cap)."""
    monkeypatch.setenv("SNAIL_MAX_RUNNING", "-1")
    with pytest.raises(ConfigurationError, match="SNAIL_MAX_RUNNING"):
        Settings.load(env_file=None)
    monkeypatch.setenv("SNAIL_MAX_RUNNING", "0")
    assert Settings.load(env_file=None).snail_max_running == 0


def test_token_value_never_in_error(monkeypatch):
    monkeypatch.setenv("SNAIL_TOKEN", "   ")
    with pytest.raises(ConfigurationError) as info:
        Settings.load(env_file=None)
    assert "SNAIL_TOKEN" in str(info.value)
    assert "repr" not in str(info.value)
    monkeypatch.setenv("SNAIL_TOKEN", "SJ_secret_value")
    assert "SJ_secret_value" not in repr(Settings.load(env_file=None))


@pytest.mark.parametrize("value,targets", [
    ("10.0.0.5", ["10.0.0.5:17888"]),
    ("10.0.0.5:19000", ["10.0.0.5:19000"]),
    ("h1:1, h2", ["h1:1", "h2:17888"]),
    ("[::1]:5", ["[::1]:5"]),
    ("[::1]", ["[::1]:17888"]),
])
def test_server_list(value, targets):
    assert Settings.load(env_file=None, snail_server_host=value).server_targets == targets


@pytest.mark.parametrize("value,fragment", [("h1,,h2", "empty entry"), ("h1:70000", "out of range")])
def test_bad_server_list(value, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        Settings.load(env_file=None, snail_server_host=value)


def test_every_setting_is_documented_in_configuration_md():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "CONFIGURATION.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in text]
    assert not missing, f"settings missing from CONFIGURATION.md: {missing}"


def test_complex_values_are_read_as_json(monkeypatch):
    # as with pydantic-settings: a list, dict or model field takes JSON text
    from typing import Dict, List, Optional

    from snailjob.settings import Settings, _is_complex

    class Wider(Settings):
        snail_extra_hosts: List[str] = []
        snail_extra_map: Optional[Dict[str, int]] = None

    monkeypatch.setenv("SNAIL_EXTRA_HOSTS", '["a", "b"]')
    monkeypatch.setenv("snail_extra_map", '{"x": 1}')
    wider = Wider.load(env_file=None)
    assert wider.snail_extra_hosts == ["a", "b"] and wider.snail_extra_map == {"x": 1}
    assert not _is_complex(Optional[int]) and not _is_complex(str) and _is_complex(Optional[List[int]])


# --- which .env: the nearest one upward from the working directory -------------------------------


def _tree(tmp_path, monkeypatch):
    """home/project/sub, HOME set to home, the environment without SNAIL_* variables."""
    for key in [k for k in os.environ if k.upper().startswith("SNAIL_")]:
        monkeypatch.delenv(key)
    home = tmp_path / "home"
    sub = home / "project" / "sub"
    sub.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home, home / "project", sub


def test_dotenv_in_a_parent_directory_is_found_from_a_subdirectory(tmp_path, monkeypatch):
    home, project, sub = _tree(tmp_path, monkeypatch)
    (project / ".env").write_text("SNAIL_GROUP_NAME=from_project\n")
    monkeypatch.chdir(sub)
    s = Settings.load()
    assert s.snail_group_name == "from_project"
    assert s.env_file_used == str((project / ".env").resolve())
    assert env_file_message(s).startswith(f"settings from {(project / '.env').resolve()}")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root")
def test_a_dotenv_another_user_could_have_planted_above_is_skipped(tmp_path, monkeypatch):
    home, project, sub = _tree(tmp_path, monkeypatch)
    planted = project / ".env"
    planted.write_text("SNAIL_SERVER_HOST=evil.example\n")
    monkeypatch.chdir(sub)
    for plant in (lambda: os.chown(planted, 65534, 65534),  # another user's file
                  lambda: os.chmod(planted, 0o666),  # a file others can write
                  lambda: os.chmod(project, 0o1777)):  # a directory others can write, as /tmp
        plant()
        assert Settings.load().env_file_used is None, "a planted .env was read"
        os.chown(planted, 0, 0), os.chmod(planted, 0o600), os.chmod(project, 0o755)
        assert Settings.load().env_file_used == str(planted.resolve())
    os.chmod(planted, 0o666)
    monkeypatch.chdir(project)  # in the working directory itself, the user's own choice: read
    assert Settings.load().env_file_used == str(planted.resolve())


def test_the_nearest_dotenv_wins(tmp_path, monkeypatch):
    home, project, sub = _tree(tmp_path, monkeypatch)
    (project / ".env").write_text("SNAIL_GROUP_NAME=from_project\nSNAIL_HOST_PORT=18001\n")
    (sub / ".env").write_text("SNAIL_GROUP_NAME=from_sub\n")
    monkeypatch.chdir(sub)
    s = Settings.load()
    assert (s.snail_group_name, s.snail_host_port) == ("from_sub", 17889)  # one file is read, not merged
    assert s.env_file_used == str((sub / ".env").resolve())


def test_no_dotenv_found_is_reported_and_the_search_stops_at_home(tmp_path, monkeypatch):
    home, project, sub = _tree(tmp_path, monkeypatch)
    (tmp_path / ".env").write_text("SNAIL_GROUP_NAME=above_home\n")  # above home: not a project's
    monkeypatch.chdir(sub)
    s = Settings.load()
    assert s.snail_group_name == "snail_job_demo_group" and s.env_file_used is None
    assert find_env_file(start=sub) is None
    assert env_file_message(s).startswith(f"no .env found (looked upward from {os.getcwd()})")
    (home / ".env").write_text("SNAIL_GROUP_NAME=in_home\n")  # home itself is searched
    assert Settings.load().snail_group_name == "in_home"


def test_explicit_env_file_wins_over_the_search_and_the_environment_over_both(tmp_path, monkeypatch):
    home, project, sub = _tree(tmp_path, monkeypatch)
    (sub / ".env").write_text("SNAIL_GROUP_NAME=nearest\n")
    chosen = project / "chosen.env"
    chosen.write_text("SNAIL_GROUP_NAME=chosen\nSNAIL_LABELS=zone:b\n")
    monkeypatch.chdir(sub)
    assert Settings.load(env_file=str(chosen)).snail_group_name == "chosen"
    assert Settings.load(env_file=str(chosen)).env_file_used == str(chosen.resolve())
    missing = Settings.load(env_file=str(project / "missing.env"))
    assert missing.snail_group_name == "snail_job_demo_group" and missing.env_file_used is None
    assert "missing.env is not a file" in env_file_message(missing)
    nothing = Settings.load(env_file=None)
    assert nothing.snail_group_name == "snail_job_demo_group" and nothing.env_file_used is None
    monkeypatch.chdir(project)
    assert Settings.load(env_file="./.env").env_file_used is None  # a path is not searched for
    monkeypatch.setenv("SNAIL_GROUP_NAME", "from_environment")
    monkeypatch.chdir(sub)
    s = Settings.load()
    assert s.snail_group_name == "from_environment" and s.env_file_used == str((sub / ".env").resolve())


def test_the_readme_flow_root_dotenv_is_honoured_by_example_main(tmp_path):
    """README: `cp .env.example .env` at the root, then `cd example && python main.py`: the node
    registers with the group of the root's .env and logs which file it read."""
    import shutil
    import signal
    import subprocess
    import sys

    from snailjob.testing import ServerEmulator

    root = Path(__file__).resolve().parents[1]
    checkout = tmp_path / "checkout"
    shutil.copytree(root / "example", checkout / "example", ignore=shutil.ignore_patterns("__pycache__", "*.db"))
    with ServerEmulator(group="group_from_root_dotenv") as emulator:
        lines = [line for line in (root / ".env.example").read_text().splitlines()
                 if not line.startswith(("SNAIL_SERVER_HOST=", "SNAIL_SERVER_PORT=", "SNAIL_GROUP_NAME=",
                                         "SNAIL_NAMESPACE=", "SNAIL_TOKEN=", "SNAIL_HOST_PORT="))]
        lines += [f"{k}={v}" for k, v in emulator.client_env().items()]
        lines += ["SNAIL_HOST_PORT=0", "SNAIL_BIND_HOST=127.0.0.1", "SNAIL_HEARTBEAT_INTERVAL=0.5",
                  "SNAIL_SHUTDOWN_GRACE=2"]
        (checkout / ".env").write_text("\n".join(lines) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SNAIL_")}
        env["PYTHONPATH"] = str(root)
        node = subprocess.Popen([sys.executable, "main.py"], cwd=checkout / "example", env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            emulator.wait_until(lambda: "demoClusterJob" in emulator.registered_executors, timeout=30)
        finally:
            node.send_signal(signal.SIGTERM)
            output = node.communicate(timeout=30)[0]
    assert node.returncode == 0, output
    assert f"settings from {(checkout / '.env').resolve()}" in output, output
