"""Config loading: defaults, overrides, strictness; run-directory helpers."""

from __future__ import annotations

import pytest

from autointerp.config import config_from_dict, dump_config, load_config
from autointerp.errors import ConfigError, UserError
from autointerp.rundir import ShardSpec, changed_keys, refuse_stale

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


def test_a_refusal_tells_changed_keys_from_keys_not_recorded_then():
    old = {"model": {"path": "a"}, "seed": 1}
    new = {"model": {"path": "b", "files": {"config.json": "..."}}, "seed": 1}
    expected = r"different config \(model\.path changed; model\.files not recorded when it was made\); fix"
    with pytest.raises(UserError, match=expected):
        refuse_stale(old, new, "x", "fix")


def _load(tmp_path, text: str, overrides: list[str] = ()):
    path = tmp_path / "c.yaml"
    path.write_text("model: {path: org/model}\nsparse_coder: {path: org/saes}\n" + text)
    return load_config(path, list(overrides))


def test_yaml_1_1_number_forms_stay_what_they_look_like(tmp_path):
    config = _load(tmp_path, "name: 0123\nlatents:\n  indices: 10:20\n")
    assert config.name == "0123"
    from autointerp.examples.selection import select_latents

    assert select_latents(config.latents, 100, config.seed, "hp") == list(range(10, 20))
    assert _load(tmp_path, "", ["latents.indices=1:30"]).latents.indices == "1:30"
    assert _load(tmp_path, "name: 1.10\n").name == "1.10"
    assert _load(tmp_path, "", ["sparse_coder.train.lr=1e-4"]).sparse_coder.train.lr == 1e-4
    assert _load(tmp_path, "cache: {n_tokens: 1_000}\n").cache.n_tokens == 1000


@pytest.mark.parametrize(
    "text",
    [
        "cache: {n_tokens: 5}\ncache: {ctx_len: 64}\n",
        "name: a\nname: b\n",
        "cache:\n  ctx_len: 8\n  ctx_len: 9\n",
    ],
)
def test_duplicate_keys_are_an_error(tmp_path, text):
    with pytest.raises(ConfigError, match="duplicate key") as caught:
        _load(tmp_path, text)
    assert "line" in str(caught.value) and str(tmp_path / "c.yaml") in str(caught.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("seed=-1", "seed"),
        ("explainer.max_tokens=0", "explainer.max_tokens"),
        ("explainer.timeout=0", "explainer.timeout"),
        ("explainer.timeout=-5", "explainer.timeout"),
        ("explainer.connect_timeout=0", "explainer.connect_timeout"),
        ("explainer.read_timeout=0", "explainer.read_timeout"),
        ("explainer.ready_timeout=-1", "explainer.ready_timeout"),
        ("explainer.max_retries=-1", "explainer.max_retries"),
        ("explainer.tensor_parallel_size=0", "explainer.tensor_parallel_size"),
        ("explainer.max_model_len=0", "explainer.max_model_len"),
        ("explainer.temperature=.nan", "explainer.temperature"),
        ("intervention.target_kl=.nan", "intervention.target_kl"),
        ("sparse_coder.train.lr=.nan", "sparse_coder.train.lr"),
        ("sparse_coder.train.seed=-2", "sparse_coder.train.seed"),
        ("explainer.gpu_memory_utilization=.inf", "explainer.gpu_memory_utilization"),
        ("embedding.batch_size=0", "embedding.batch_size"),
        ('latents.indices="10:5"', "latents.indices"),
        ('latents.indices=""', "latents.indices"),
        ("latents.indices=[]", "latents.indices"),
        ("latents.indices=[-1, 3]", "latents.indices"),
        ("scorers=[detection, detection]", "scorers"),
        ('name=""', "name"),
        ("name=../x", "name"),
        ("explainer.api_key_env=sk-test-SECRET", "explainer.api_key_env"),
        ("explainer.api_key_env=MY KEY", "explainer.api_key_env"),
        ("explainer.base_url=https://user:pw@host/v1", "explainer.base_url"),
        ("explainer.base_url=https://host/v1?api_key=abc", "explainer.base_url"),
        ("scorer.base_url=https://user:pw@host/v1", "scorer.base_url"),
    ],
)
def test_out_of_range_values_are_refused_at_load(tmp_path, override, key):
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "", [override])
    assert caught.value.key == key, caught.value
    assert "SECRET" not in str(caught.value) and "pw@" not in str(caught.value)


def test_huge_latent_ranges_are_refused_without_allocating(tmp_path):
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(ConfigError, match="more than"):
        _load(tmp_path, "", ['latents.indices="0:99999999999"'])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20


def test_bad_set_yaml_and_non_utf8_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML") as caught:
        _load(tmp_path, "", ["name=[a"])
    assert caught.value.key == "name"
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"model: {path: org/model}\nname: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8") as caught:
        load_config(path)
    assert caught.value.key == str(path) and "line 2" in str(caught.value)


def test_credentials_free_urls_and_env_names_are_accepted(tmp_path):
    config = _load(
        tmp_path,
        "",
        [
            "explainer.base_url=https://host/openai/v1?api-version=2024-06-01",
            "explainer.api_key_env=AZURE_KEY_1",
        ],
    )
    assert config.explainer.api_key_env == "AZURE_KEY_1"


def test_cross_section_and_hookpoint_checks(tmp_path):
    with pytest.raises(ConfigError, match="cache.ctx_len=16") as caught:
        _load(tmp_path, "", ["cache.ctx_len=16"])
    assert caught.value.key == "examples.window"
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "", ['sparse_coder.hookpoints=[""]'])
    assert caught.value.key == "sparse_coder.hookpoints"
