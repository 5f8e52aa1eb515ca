from pathlib import Path

import pytest

from mailhaven.config import ConfigError, config_from_dict, load_config, parse_duration, parse_size


@pytest.mark.parametrize(("text", "value"), [("20K", 20480), ("50M", 50 * 1024**2), ("1G", 1024**3),
                                              ("100", 100), (7, 7), ("5mb", 5 * 1024**2)])
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize(("text", "value"), [("30s", 30), ("5m", 300), ("4h", 14400), ("5d", 432000), (12, 12)])
def test_durations(text, value):
    assert parse_duration(text) == value


@pytest.mark.parametrize("bad", ["5x", "", "-1s", "m", True])
def test_bad_durations(bad):
    with pytest.raises(ConfigError):
        parse_duration(bad, "queue.warn_after")


def test_defaults():
    c = config_from_dict({}, Path("data"))
    assert c.listen.address("smtp") == ("127.0.0.1", 2525)
    assert c.listen.address("http") == ("127.0.0.1", 8080)
    assert c.store.backend == "sqlite"
    assert c.is_trusted("127.0.0.1") and c.is_trusted("::1") and not c.is_trusted("192.0.2.1")


def test_values_and_disabled_listener():
    c = config_from_dict({"hostname": "mail.nyu.example", "listen": {"smtp": "[::1]:25", "pop3": ""},
                          "limits": {"message_size": "20M", "recipients": 5},
                          "queue": {"retry": ["1m", "5m"], "warn_after": "4h"}}, Path("d"))
    assert c.listen.address("smtp") == ("::1", 25)
    assert c.listen.address("pop3") is None
    assert c.limits.message_size == 20 * 1024**2 and c.limits.recipients == 5
    assert c.queue.retry == (60.0, 300.0) and c.queue.warn_after == 14400


@pytest.mark.parametrize(("raw", "named"), [
    ({"bogus": 1}, "bogus"),
    ({"listen": {"smtp": "nope"}}, "listen.smtp"),
    ({"listen": {"smtpx": "1.2.3.4:1"}}, "listen.smtpx"),
    ({"limits": {"message_size": "lots"}}, "limits.message_size"),
    ({"limits": {"recipients": "ten"}}, "limits.recipients"),
    ({"store": {"backend": "mysql"}}, "store.backend"),
    ({"store": {"backend": "postgres"}}, "store.dsn"),
    ({"tls": {"cert": "/nonexistent.pem", "key": "/nonexistent.key"}}, "tls.cert"),
    ({"security": {"loopback_is_secure": "yes"}}, "security.loopback_is_secure"),
])
def test_errors_name_the_key(raw, named):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, Path("d"))
    assert named in str(info.value)


def test_load_file(tmp_path):
    (tmp_path / "mailhaven.toml").write_text('hostname = "mx.example"\n[limits]\nrecipients = 3\n')
    assert load_config(tmp_path).limits.recipients == 3
    (tmp_path / "broken.toml").write_text("hostname = \n")
    with pytest.raises(ConfigError):
        load_config(tmp_path, tmp_path / "broken.toml")
    with pytest.raises(ConfigError):
        load_config(tmp_path, tmp_path / "missing.toml")


@pytest.mark.parametrize(("raw", "named"), [
    ({"ratelimit": {"account_messages": -1}}, "ratelimit.account_messages"),
    ({"ratelimit": {"messages_per_address": "many"}}, "ratelimit.messages_per_address"),
    ({"ratelimit": {"window": "0s"}}, "ratelimit.window"),
    ({"ratelimit": {"exempt": ["10.0.0.0/33"]}}, "ratelimit.exempt"),
])
def test_rate_limit_errors_name_the_key(raw, named):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, Path("d"))
    assert named in str(info.value)
    assert config_from_dict({}, Path("d")).ratelimit.account_recipients > 0      # on by default


@pytest.mark.parametrize(("raw", "named"), [
    ({"rspamd": {"url": "127.0.0.1:11333"}}, "rspamd.url"),
    ({"rspamd": {"unreachable": "drop"}}, "rspamd.unreachable"),
    ({"rspamd": {"timeout": "0s"}}, "rspamd.timeout"),
    ({"clamd": {"socket": "localhost"}}, "clamd.socket"),
    ({"clamd": {"max_size": "big"}}, "clamd.max_size"),
])
def test_scanner_errors_name_the_key(raw, named):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, Path("d"))
    assert named in str(info.value)
