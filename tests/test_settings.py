import pytest

from snailjob import ConfigurationError, Settings


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
