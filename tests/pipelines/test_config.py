"""Study configs and the checks that run before a study starts."""

from pathlib import Path

import pytest

from components.common.errors import AprflowError
from pipelines.config import ConfigError, load_config, parse_overrides

DEMO = Path(__file__).parents[2] / "pipelines" / "configs" / "apr_study.toy.yaml"


def test_defaults_file_and_overrides_layer():
    from pipelines.apr_study import apr_study

    arguments = load_config(apr_study, DEMO, parse_overrides(["n_models=3", "epochs=1"]))
    assert arguments["n_models"] == 3 and arguments["epochs"] == 1
    assert arguments["datasets"] == ["digits", "faces", "shapes"]
    assert arguments["store_uri"] == ""  # from the signature's default
    assert isinstance(arguments["flops_min"], float)


def test_list_shorthand_and_yaml_values():
    from pipelines.apr_study import apr_study

    overrides = parse_overrides(["datasets=digits,shapes", "train_seeds=[0, 1]", "flops_max=9e7"])
    arguments = load_config(apr_study, None, overrides)
    assert arguments["datasets"] == ["digits", "shapes"]
    assert arguments["train_seeds"] == [0, 1]
    assert arguments["flops_max"] == 9e7


def test_unknown_key_names_the_valid_ones():
    from pipelines.apr_study import apr_study

    with pytest.raises(ConfigError, match="unknown config key 'n_model'.*n_models"):
        load_config(apr_study, None, {"n_model": 3})


def test_wrong_type_names_key_and_example():
    from pipelines.apr_study import apr_study

    with pytest.raises(ConfigError, match="'n_models' must be an int, got 'many'"):
        load_config(apr_study, None, {"n_models": "many"})


def test_bad_files(tmp_path):
    from pipelines.apr_study import apr_study

    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(apr_study, tmp_path / "missing.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(apr_study, bad, {})
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["n_models"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"datasets": ["digits", "imagenet"]}, "unknown or missing dataset.*imagenet"),
        ({"flops_min": 5e8, "flops_max": 1e8}, "FLOP band.*is empty"),
        ({"flops_min": 1.0, "flops_max": 2.0}, "band"),
        ({"recipe": "a9"}, "unknown recipe 'a9'"),
        ({"space": "anynetx_z"}, "anynetx_z"),
        ({"reference": "faces", "datasets": ["digits"]}, "reference 'faces'"),
        ({"top_k": 8}, "top_k=8 compares every one of the 8 models"),
        ({"test_noise": "gaussian"}, "test_noise 'gaussian' is not one of auto, binomial, none"),
        ({"tracking_uri": "http://127.0.0.1:9"}, "MLflow tracking server .* is unreachable"),
        ({"store_uri": "s3://bucket/prefix"}, "S3 store s3://bucket/prefix at http://127.0.0.1:9"),
    ],
)
def test_preflight_rejects(override, message, local_env, monkeypatch):
    from pipelines.apr_study import apr_study
    from pipelines.preflight import check_study

    monkeypatch.setenv("APRFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("APRFLOW_S3_MAX_ATTEMPTS", "2")  # the default retries for ~1 min
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    arguments = load_config(apr_study, DEMO, override)
    with pytest.raises(AprflowError, match=message):
        check_study(arguments)


def test_preflight_accepts_the_demo(local_env):
    from pipelines.apr_study import apr_study
    from pipelines.preflight import check_study

    check_study(load_config(apr_study, DEMO, {}))
