"""Config loading: defaults, overrides, strictness; run-directory helpers."""

from __future__ import annotations

import pytest

from autointerp.config import config_from_dict, dump_config, load_config
from autointerp.errors import ConfigError, UserError
from autointerp.rundir import ShardSpec, changed_keys

MINIMAL = {"model": {"path": "org/model"}, "sparse_coder": {"path": "org/saes"}}


def test_defaults_match_the_documented_ones():
    config = config_from_dict(MINIMAL)
    assert config.cache.n_tokens == 10_000_000 and config.cache.ctx_len == 256
    assert config.cache.activation_dtype == "float32" and config.cache.latents_per_shard == 8192
    assert config.sparse_coder.hookpoints == () and config.sparse_coder.format == "auto"
    assert config.dataset.split == "train" and config.dataset.text_column == "text"
    assert str(config.run_dir) == "runs/run"


def test_yaml_overrides_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {path: org/model}\nsparse_coder: {path: org/saes}\ncache: {n_tokens: 10_000}\n")
    config = load_config(
        path, ["cache.n_tokens=2_000", "sparse_coder.hookpoints=[layers.1, layers.2.mlp]", "name=x", "seed=3"]
    )
    assert config.cache.n_tokens == 2000
    assert config.sparse_coder.hookpoints == ("layers.1", "layers.2.mlp")
    assert str(config.run_dir) == "runs/x" and config.seed == 3
    path.write_text(dump_config(config))
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"sparse_coder": {"path": "x"}}, "model.path"),
        ({**MINIMAL, "cache": {"n_tokens": "many"}}, "cache.n_tokens"),
        ({**MINIMAL, "cache": {"n_tokens": True}}, "cache.n_tokens"),
        ({**MINIMAL, "cache": {"activation_dtype": "float16"}}, "cache.activation_dtype"),
        ({**MINIMAL, "cache": 3}, "cache"),
        ({"model": {"path": "m"}, "sparse_coder": {"format": "sparsify"}}, "sparse_coder.path"),
        ({**MINIMAL, "model": {"path": "m", "device": "gpu"}}, "model.device"),
        ({**MINIMAL, "sparse_coder": {"path": "x", "hookpoints": ["a", "a"]}}, "sparse_coder.hookpoints"),
    ],
)
def test_invalid_values_name_their_key(data, key):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert info.value.key == key


def test_neuron_formats_need_no_path():
    config = config_from_dict(
        {
            "model": {"path": "m"},
            "sparse_coder": {"format": "topk-neurons", "k": 8, "hookpoints": ["layers.6.mlp"]},
        }
    )
    assert config.sparse_coder.k == 8


def test_override_of_unknown_nested_key_suggests():
    with pytest.raises(ConfigError, match="did you mean 'ctx_len'"):
        from autointerp.config import apply_override

        apply_override({}, "cache.ctxlen=5")


def test_shard_spec_parsing_and_environment():
    assert ShardSpec.parse("1/4") == ShardSpec(1, 4)
    assert [ShardSpec(1, 3).owns(i) for i in range(6)] == [False, True, False, False, True, False]
    for bad in ("4/4", "a/2", "1", "-1/2"):
        with pytest.raises(UserError):
            ShardSpec.parse(bad)
    assert ShardSpec.from_env({}) == ShardSpec()
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert ShardSpec.from_env(env) == ShardSpec(3, 4)


def test_changed_keys_are_dotted():
    old = {"cache": {"n_tokens": 1, "ctx_len": 2}, "model": {"path": "a"}}
    new = {"cache": {"n_tokens": 5, "ctx_len": 2}, "model": {"path": "b"}}
    assert changed_keys(old, new) == ["cache.n_tokens", "model.path"]
