"""Settings from the environment, a .env file and a secrets folder, by that priority."""

from __future__ import annotations

import pytest

from tilemore.errors import TilemoreError
from tilemore.settings import Settings


def test_env_file_then_secrets_folder_under_the_environment(tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "TILEMORE_DATABASE_URL").write_text("postgresql://db/from-secret\n")
    (secrets / "payment_webhook_secret").write_text("whsec_mounted")  # a field's own name
    (secrets / "..data").mkdir()  # Kubernetes' own entries are skipped
    (secrets / "unrelated").write_text("x")
    env_file = tmp_path / "tilemore.env"
    env_file.write_text("# a comment\nTILEMORE_REPLICAS=3\nTILEMORE_PORT=9000\n"
                        "OTHER_TOOL=kept-for-it\nTILEMORE_MAX_INPUT_PIXELS=\"5000\"\n")
    settings = Settings.from_env({"TILEMORE_ENV_FILE": str(env_file),
                                  "TILEMORE_SECRETS_DIR": str(secrets),
                                  "TILEMORE_PORT": "9100"})
    assert settings.port == 9100  # the environment wins over the file
    assert settings.replicas == 3 and settings.max_input_pixels == 5000  # the file
    assert settings.database_url == "postgresql://db/from-secret"  # the folder, no newline
    assert settings.payment_webhook_secret.get_secret_value() == "whsec_mounted"


def test_the_file_wins_over_the_secrets_folder(tmp_path):
    (tmp_path / "TILEMORE_REPLICAS").write_text("2")
    env_file = tmp_path / ".env.test"
    env_file.write_text("TILEMORE_REPLICAS=5\n")
    settings = Settings.from_env({"TILEMORE_ENV_FILE": str(env_file),
                                  "TILEMORE_SECRETS_DIR": str(tmp_path)})
    assert settings.replicas == 5


def test_the_default_env_file_is_read_from_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("TILEMORE_REPLICAS", "TILEMORE_ENV_FILE", "TILEMORE_SECRETS_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert Settings.from_env().replicas == Settings().replicas  # none there: no error
    (tmp_path / ".env").write_text("TILEMORE_REPLICAS=4\n")
    assert Settings.from_env().replicas == 4
    # A mapping given explicitly is the whole environment: no file is read behind it.
    assert Settings.from_env({}).replicas == Settings().replicas


@pytest.mark.parametrize(("content", "message"), [
    ("TILEMORE_REPLICA=3\n", "did you mean TILEMORE_REPLICAS"),
    ("TILEMORE_REPLICAS=zero\n", "TILEMORE_REPLICAS"),
])
def test_a_bad_env_file_line_is_named(tmp_path, content, message):
    env_file = tmp_path / "bad.env"
    env_file.write_text(content)
    with pytest.raises(TilemoreError, match=message) as err:
        Settings.from_env({"TILEMORE_ENV_FILE": str(env_file)})
    assert err.value.code == "invalid_setting"


def test_missing_and_oversized_sources_are_refused(tmp_path):
    with pytest.raises(TilemoreError, match="no file") as err:
        Settings.from_env({"TILEMORE_ENV_FILE": str(tmp_path / "absent.env")})
    assert err.value.code == "invalid_setting"
    with pytest.raises(TilemoreError, match="no folder"):
        Settings.from_env({"TILEMORE_SECRETS_DIR": str(tmp_path / "absent")})
    huge = tmp_path / "huge.env"
    huge.write_bytes(b"#" * (1 << 20) + b"\n")
    with pytest.raises(TilemoreError, match="bytes"):
        Settings.from_env({"TILEMORE_ENV_FILE": str(huge)})
    (tmp_path / "TILEMORE_DATABASE_URL").write_bytes(b"x" * (65 << 10))
    with pytest.raises(TilemoreError, match="bytes for one setting"):
        Settings.from_env({"TILEMORE_SECRETS_DIR": str(tmp_path)})
