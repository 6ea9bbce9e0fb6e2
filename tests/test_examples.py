"""Latent selection and example sampling on synthetic caches with planted activations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cache_factory import write_synthetic_cache

from autointerp.cache import CacheReader, LatentActivations
from autointerp.config import ExamplesConfig, LatentsConfig
from autointerp.errors import ConfigError
from autointerp.examples import Example, ExampleBuilder, LatentExamples, rng_for, select_latents
from autointerp.examples.windows import Windows

CTX = 64
WIDTH = 16
SAMPLINGS = ("quantiles", "top", "random", "mix")


def config(**overrides) -> ExamplesConfig:
    values = dict(
        window=WIDTH, n_explain=8, n_quantiles=4, n_test=8, n_negative=8, n_explain_negative=4, min_test=0
    )
    return ExamplesConfig(**(values | overrides))


def builder(
    reader: CacheReader,
    seed: int = 0,
    min_activations: int = 1,
    decoder=None,
    embed=None,
    decode=None,
    **overrides,
) -> ExampleBuilder:
    cfg = config(**overrides)
    return ExampleBuilder(reader, cfg, min_activations, seed, "layers.0", decoder, embed, decode)


def random_tokens(num_sequences: int, ctx_len: int = CTX, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(100, 1000, size=(num_sequences, ctx_len), dtype=np.int32)


def tokens_of(examples: list[Example]) -> set[tuple[int, int]]:
    return {(e.sequence, e.start + i) for e in examples for i in range(len(e.tokens))}


def windows_of(examples: list[Example]) -> list[tuple[int, int]]:
    return [(e.sequence, e.start) for e in examples]


def assert_matches_cache(reader: CacheReader, latent: int, example: Example) -> None:
    """The example's tokens and activations are those of the cache at its window."""
    acts = reader.latent(latent)
    dense = np.zeros(reader.num_sequences * reader.ctx_len, dtype=np.float32)
    dense[acts.token_index] = acts.activation
    first = example.sequence * reader.ctx_len + example.start
    np.testing.assert_array_equal(example.activations, dense[first : first + len(example.tokens)])
    expected = reader.tokens()[example.sequence, example.start : example.start + len(example.tokens)]
    np.testing.assert_array_equal(example.tokens, expected.numpy())


@pytest.fixture
def scattered(tmp_path) -> CacheReader:
    """Latent 0 fires on 100 random tokens, latent 1 on 5, latent 2 never."""
    rng = np.random.default_rng(1)
    num_sequences = 40
    where = rng.choice(num_sequences * CTX, size=100, replace=False)
    acts = {
        0: [(int(i), float(v)) for i, v in zip(where, rng.uniform(0.1, 10, size=100), strict=True)],
        1: [(int(i), 1.0) for i in where[:5]],
    }
    return write_synthetic_cache(tmp_path / "layers.0", random_tokens(num_sequences), acts, 3, 2)


def one_per_cell(tmp_path: Path, num_cells: int) -> CacheReader:
    """Latent 0 fires once in each of `num_cells` grid cells, with values 1..num_cells in random order."""
    rng = np.random.default_rng(2)
    cells_per_sequence = CTX // WIDTH
    cells = np.arange(num_cells)
    first = cells // cells_per_sequence * CTX + cells % cells_per_sequence * WIDTH
    where = first + rng.integers(0, WIDTH, size=num_cells)
    values = rng.permutation(num_cells) + 1
    acts = {0: [(int(i), float(v)) for i, v in zip(where, values, strict=True)]}
    num_sequences = -(-num_cells // cells_per_sequence)
    return write_synthetic_cache(tmp_path / "layers.0", random_tokens(num_sequences), acts, 1)


def test_cache_factory_dense_and_sparse_agree(tmp_path):
    dense = np.zeros((3 * 8, 5), dtype=np.float32)
    dense[[0, 5, 17], 1] = [1.5, 2.0, 0.5]
    dense[23, 4] = 3.0
    sparse = {1: [(17, 0.5), (0, 1.5), (5, 2.0)], 4: [(23, 3.0)]}
    tokens = random_tokens(3, 8)
    a = write_synthetic_cache(tmp_path / "a", tokens, dense, 5, latents_per_shard=2)
    b = write_synthetic_cache(tmp_path / "b", tokens, sparse, 5, latents_per_shard=2)
    assert len(a.manifest["shards"]) == 3
    for latent in range(5):
        np.testing.assert_array_equal(a.latent(latent).token_index, b.latent(latent).token_index)
        np.testing.assert_array_equal(a.latent(latent).activation, b.latent(latent).activation)
    np.testing.assert_array_equal(a.latent(1).token_index, [0, 5, 17])
    np.testing.assert_array_equal(a.stats()["firing_count"], [0, 3, 0, 0, 1])
    np.testing.assert_array_equal(b.stats()["max_activation"], [0, 2, 0, 0, 3])
    np.testing.assert_array_equal(b.tokens().numpy(), tokens)


def test_rare_latents_are_skipped_with_a_reason(scattered):
    build = builder(scattered, min_activations=10)
    for latent, count in ((1, 5), (2, 0)):
        result = build.build(latent)
        assert result.skipped == f"too few activating windows ({count} < 10)"
        assert result.num_activations == count
        assert not (result.explain or result.test or result.explain_negatives or result.test_negatives)
    assert build.build(0).skipped is None


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_explainer_and_test_examples_share_no_token(scattered, sampling):
    result = builder(scattered, explain_sampling=sampling, n_explain=20, n_test=30).build(0)
    assert len(result.explain) == 20 and len(result.test) > 0
    assert not tokens_of(result.explain) & tokens_of(result.test)
    for example in result.explain + result.test:
        assert example.max_activation > 0
        assert_matches_cache(scattered, 0, example)
    for examples in (result.explain, result.test):
        assert len(set(windows_of(examples))) == len(examples)
    maxima = [e.max_activation for e in result.explain]
    assert maxima == sorted(maxima, reverse=True)


def test_random_negatives_are_silent_and_disjoint(scattered):
    result = builder(scattered, n_explain_negative=6, n_negative=30).build(0)
    assert len(result.explain_negatives) == 6 and len(result.test_negatives) == 30
    negatives = result.explain_negatives + result.test_negatives
    assert len(tokens_of(negatives)) == len(negatives) * WIDTH  # no token in two negatives
    for example in negatives:
        assert example.max_activation == 0 and example.quantile is None
        assert_matches_cache(scattered, 0, example)
    assert all(example.start % WIDTH == 0 for example in result.explain_negatives)  # grid cells
    # scoring negatives sit where held-out activating windows sit: anywhere, not only on the grid
    assert any(example.start % WIDTH for example in result.test_negatives)
    grid = builder(scattered, n_explain_negative=6, n_negative=30, test_windows="like_explain").build(0)
    assert all(example.start % WIDTH == 0 for example in grid.test_negatives)


def test_random_negatives_of_a_dense_latent_take_all_silent_cells(tmp_path):
    dense = np.ones((4 * CTX, 1), dtype=np.float32)
    dense[CTX : 2 * CTX, 0] = 0  # sequence 1 is the only silent one: 4 cells
    reader = write_synthetic_cache(tmp_path / "layers.0", random_tokens(4), dense, 1)
    result = builder(reader, n_explain_negative=2, n_negative=8, test_windows="like_explain").build(0)
    negatives = result.explain_negatives + result.test_negatives
    assert sorted(windows_of(negatives)) == [(1, 0), (1, 16), (1, 32), (1, 48)]
    placed = builder(reader, n_explain_negative=2, n_negative=8).build(0)  # at random offsets
    negatives = placed.explain_negatives + placed.test_negatives
    assert 3 <= len(negatives) <= 4 and {e.sequence for e in negatives} == {1}
    assert len(tokens_of(negatives)) == len(negatives) * WIDTH


@pytest.mark.parametrize(("position", "start"), [(30, 30 - WIDTH // 2), (1, 0), (CTX - 1, CTX - WIDTH)])
def test_centred_windows_put_the_peak_in_the_middle_and_stay_inside(tmp_path, position, start):
    reader = write_synthetic_cache(
        tmp_path / "layers.0", random_tokens(4), {0: [(2 * CTX + position, 1.0)]}, 1
    )
    (example,) = builder(reader, n_explain=1).build(0).explain
    assert (example.sequence, example.start, len(example.tokens)) == (2, start, WIDTH)
    assert example.peak == position - start
    if position == 30:
        assert example.peak == WIDTH // 2
    assert_matches_cache(reader, 0, example)


@pytest.mark.parametrize(
    ("ctx_len", "position", "starts"), [(64, 30, [16]), (60, 58, [44]), (60, 47, [32, 44])]
)
def test_uncentred_windows_are_grid_cells(tmp_path, ctx_len, position, starts):
    """With ctx_len not a multiple of the width, the last cell [ctx_len - width, ctx_len) overlaps; both
    cells are candidates, but one draw never takes two windows that share a token."""
    planted = {0: [(ctx_len + position, 1.0)]}
    reader = write_synthetic_cache(tmp_path / "layers.0", random_tokens(2, ctx_len), planted, 1)
    windows = Windows(reader.tokens().numpy(), WIDTH)
    found = windows.candidates(reader.latent(0), center=False)
    assert sorted(zip(found.sequence.tolist(), found.start.tolist(), strict=True)) == [(1, a) for a in starts]
    explain = builder(reader, n_explain=2, center=False).build(0).explain
    assert len(explain) == 1 and windows_of(explain)[0] in [(1, start) for start in starts]
    assert all(len(e.tokens) == WIDTH for e in explain)


@pytest.mark.parametrize(("ctx_len", "center"), [(64, True), (64, False), (60, True), (60, False)])
def test_candidates_match_a_cell_by_cell_scan(ctx_len, center):
    rng = np.random.default_rng(ctx_len)
    dense = np.where(rng.random((30, ctx_len)) < 0.03, rng.integers(1, 5, size=(30, ctx_len)), 0)
    index = np.flatnonzero(dense)
    acts = LatentActivations(0, index, dense.reshape(-1)[index].astype(np.float32))
    found = Windows(random_tokens(30, ctx_len), WIDTH).candidates(acts, center)
    expected = set()
    for sequence, cell in np.ndindex(30, -(-ctx_len // WIDTH)):
        start = min(cell * WIDTH, ctx_len - WIDTH)
        values = dense[sequence, start : start + WIDTH]
        if values.any():
            peak = start + int(np.argmax(values))
            placed = min(max(peak - WIDTH // 2, 0), ctx_len - WIDTH) if center else start
            # the value binned is the placed window's own maximum, not its cell's
            expected.add((sequence, placed, float(dense[sequence, placed : placed + WIDTH].max())))
    assert len(found) == len(expected)
    columns = (found.sequence.tolist(), found.start.tolist(), found.max_activation.tolist())
    assert set(zip(*columns, strict=True)) == expected
    empty = LatentActivations(1, np.zeros(0, np.int64), np.zeros(0, np.float32))
    assert len(Windows(random_tokens(2), WIDTH).candidates(empty, center)) == 0


def test_window_longer_than_the_sequence_is_the_whole_sequence(tmp_path):
    reader = write_synthetic_cache(tmp_path / "layers.0", random_tokens(3, 8), {0: [(13, 2.0)]}, 1)
    (example,) = builder(reader, n_explain=1).build(0).explain
    assert (example.sequence, example.start, len(example.tokens), example.peak) == (1, 0, 8, 5)


def test_quantile_sampling_draws_evenly_from_equal_count_bins(tmp_path):
    reader = one_per_cell(tmp_path, 400)
    result = builder(
        reader, center=False, n_explain=40, n_quantiles=10, n_test=50, test_windows="like_explain"
    ).build(0)
    explained = [int(e.max_activation) for e in result.explain]
    assert [e.quantile for e in result.explain] == [(v - 1) // 40 for v in explained]
    assert np.bincount([(v - 1) // 40 for v in explained]).tolist() == [4] * 10
    remaining = np.array_split(np.array(sorted(set(range(1, 401)) - set(explained))), 10)
    assert np.bincount([e.quantile for e in result.test]).tolist() == [5] * 10
    for example in result.test:
        assert int(example.max_activation) in remaining[example.quantile]


def test_top_sampling_takes_the_highest(tmp_path):
    result = builder(one_per_cell(tmp_path, 400), center=False, explain_sampling="top", n_explain=40).build(0)
    assert [int(e.max_activation) for e in result.explain] == list(range(400, 360, -1))


def test_mix_sampling_takes_half_top_half_quantiles(tmp_path):
    reader = one_per_cell(tmp_path, 400)
    result = builder(reader, center=False, explain_sampling="mix", n_explain=40, n_quantiles=10).build(0)
    explained = {int(e.max_activation) for e in result.explain}
    assert set(range(381, 401)) <= explained
    rest = explained - set(range(381, 401))
    assert np.bincount([(v - 1) // 38 for v in rest]).tolist() == [2] * 10


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_sampling_is_without_replacement_and_takes_what_there_is(tmp_path, sampling):
    reader = one_per_cell(tmp_path, 30)
    build = builder(reader, center=False, explain_sampling=sampling, n_explain=30, n_test=50)
    result = build.build(0)
    assert len(set(windows_of(result.explain))) == 30
    assert result.test == []
    result = builder(
        reader, center=False, explain_sampling=sampling, n_explain=20, n_test=50, test_windows="like_explain"
    ).build(0)
    assert len(set(windows_of(result.explain + result.test))) == 30


def test_draws_are_reproducible_and_depend_on_seed_and_latent(scattered):
    first = builder(scattered, seed=3, explain_sampling="random").build(0).to_dict()
    assert builder(scattered, seed=3, explain_sampling="random").build(0).to_dict() == first
    other = builder(scattered, seed=4, explain_sampling="random").build(0).to_dict()
    for key in ("explain", "test", "test_negatives"):
        assert other[key] != first[key]
    assert rng_for(3, "layers.0", 0, "test").integers(2**32) != rng_for(3, "layers.0", 1, "test").integers(
        2**32
    )


def test_examples_round_trip_through_json(scattered):
    result = builder(scattered).build(0)
    restored = LatentExamples.from_dict(json.loads(json.dumps(result.to_dict())))
    assert restored.to_dict() == result.to_dict()
    assert restored.explain[0].tokens.dtype == np.int32
    assert restored.explain[0].activations.dtype == np.float32


def test_select_latents():
    assert select_latents(LatentsConfig(indices=(5, 1, 5)), 10, 0, "h") == [1, 5]
    assert select_latents(LatentsConfig(indices="0:3,7"), 10, 0, "h") == [0, 1, 2, 7]
    assert select_latents(LatentsConfig(sample=None), 4, 0, "h") == [0, 1, 2, 3]
    assert select_latents(LatentsConfig(sample=50), 4, 0, "h") == [0, 1, 2, 3]
    sample = select_latents(LatentsConfig(sample=20), 1000, 0, "h")
    assert len(set(sample)) == 20 and sample == sorted(sample) and 0 <= sample[0] and sample[-1] < 1000
    assert select_latents(LatentsConfig(sample=20), 1000, 0, "h") == sample
    assert select_latents(LatentsConfig(sample=20), 1000, 1, "h") != sample
    with pytest.raises(ConfigError) as error:
        select_latents(LatentsConfig(indices="0:11"), 10, 0, "h")
    assert error.value.key == "latents.indices" and "10" in str(error.value)


def test_neighbour_negatives_come_from_the_closest_decoder_direction(tmp_path):
    rng = np.random.default_rng(5)
    decoder = np.zeros((4, 8), dtype=np.float32)
    decoder[0, 0], decoder[1, :2], decoder[2, 2], decoder[3, 0] = 1, (1, 0.05), 1, -1
    where = rng.choice(40 * CTX, size=120, replace=False)
    acts = {
        0: [(int(i), 1.0) for i in where[:20]],
        1: [(int(i), 100.0) for i in where[:20]] + [(int(i), 1 + k / 10) for k, i in enumerate(where[20:60])],
        2: [(int(i), 1e4) for i in where[60:90]],
        3: [(int(i), 1e4) for i in where[90:]],
    }
    reader = write_synthetic_cache(tmp_path / "layers.0", random_tokens(40), acts, 4, decoder=decoder)
    result = builder(reader, negatives="neighbours", decoder=decoder).build(0)
    negatives = result.explain_negatives + result.test_negatives
    assert len(negatives) == 12 and not tokens_of(result.explain_negatives) & tokens_of(result.test_negatives)
    neighbour = reader.latent(1)
    for example in negatives:
        assert example.max_activation == 0
        assert_matches_cache(reader, 0, example)
        first = example.sequence * CTX + example.start
        inside = (neighbour.token_index >= first) & (neighbour.token_index < first + WIDTH)
        assert inside.any() and neighbour.activation[inside].max() < 100


def test_negatives_without_their_inputs_are_config_errors(scattered):
    for kind in ("neighbours", "similar"):
        with pytest.raises(ConfigError) as error:
            builder(scattered, negatives=kind)
        assert error.value.key == "examples.negatives"


def test_similar_negatives_resemble_the_activating_windows(tmp_path):
    rng = np.random.default_rng(6)
    tokens = np.concatenate([rng.integers(1, 11, size=(20, CTX)), rng.integers(500, 600, size=(40, CTX))])
    where = rng.choice(10 * CTX, size=20, replace=False)
    reader = write_synthetic_cache(
        tmp_path / "layers.0", tokens.astype(np.int32), {0: [(int(i), 1.0) for i in where]}, 2
    )
    calls: list[int] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        bags = np.zeros((len(texts), 1000), dtype=np.float32)
        for row, text in enumerate(texts):
            np.add.at(bags[row], [int(t) for t in text.split()], 1)
        return bags

    def decode(ids: np.ndarray) -> str:
        return " ".join(str(i) for i in ids)

    build = builder(reader, negatives="similar", embed=embed, decode=decode)
    result = build.build(0)
    negatives = result.explain_negatives + result.test_negatives
    assert len(negatives) == 12 and not tokens_of(result.explain_negatives) & tokens_of(result.test_negatives)
    for example in negatives:
        assert example.sequence < 20 and example.max_activation == 0
        assert_matches_cache(reader, 0, example)
    build.build(0)
    assert calls == [80, 8, 160, 8, 8, 8]  # each pool (explainer's, scoring) is embedded once per builder


def clustered(tmp_path: Path, seed: int = 7) -> CacheReader:
    """Latent 0 fires in bursts: 60 bursts of 2-6 tokens within a few positions, over 40 sequences."""
    rng = np.random.default_rng(seed)
    acts: dict[int, float] = {}
    for centre in rng.choice(40 * CTX, size=60, replace=False):
        for offset in rng.integers(-6, 7, size=int(rng.integers(2, 7))):
            index = int(np.clip(centre + offset, 0, 40 * CTX - 1))
            acts[index] = float(rng.uniform(0.5, 10))
    return write_synthetic_cache(tmp_path / "layers.0", random_tokens(40), {0: sorted(acts.items())}, 1)


def bag_embed(texts: list[str]) -> np.ndarray:
    bags = np.zeros((len(texts), 1000), dtype=np.float32)
    for row, text in enumerate(texts):
        np.add.at(bags[row], [int(t) for t in text.split()], 1)
    return bags


def spaced(ids: np.ndarray) -> str:
    return " ".join(str(i) for i in ids)


@pytest.mark.parametrize("negatives", ["random", "neighbours", "similar"])
def test_the_explainers_view_does_not_depend_on_test_only_keys(tmp_path, negatives):
    """Changing what is held out for scoring never changes what the explainer saw, for every sampler, and
    no scored window shares a token with anything the explainer saw, its negatives included."""
    from autointerp.examples.builder import TEST_ONLY_KEYS

    assert {"examples.n_test", "examples.n_negative"} <= TEST_ONLY_KEYS
    rng = np.random.default_rng(8)
    acts = {
        latent: [
            (int(i), float(v))
            for i, v in zip(rng.choice(40 * CTX, 100, replace=False), rng.uniform(1, 9, 100), strict=True)
        ]
        for latent in range(6)
    }
    reader = write_synthetic_cache(tmp_path / "layers.0", random_tokens(40), acts, 6)
    decoder = rng.normal(size=(6, 8)).astype(np.float32)
    inputs = {"decoder": decoder, "embed": bag_embed, "decode": spaced}

    def build(**overrides):
        return builder(reader, negatives=negatives, **inputs, **overrides).build(0)

    reference = build(n_negative=10, n_test=8)
    assert reference.explain and reference.explain_negatives
    for overrides in (
        {"n_negative": 30},
        {"n_negative": 3},
        {"n_test": 20},
        {"n_test": 2},
        {"test_windows": "like_explain"},
        {"min_test": 1},
    ):
        other = build(**overrides)
        assert windows_of(other.explain) == windows_of(reference.explain), overrides
        assert windows_of(other.explain_negatives) == windows_of(reference.explain_negatives), overrides
        assert other.explainer_view_digest() == reference.explainer_view_digest()
        shown = tokens_of(other.explain + other.explain_negatives)
        assert not shown & tokens_of(other.test_negatives) and not shown & tokens_of(other.test)
        assert not tokens_of(other.test) & tokens_of(other.test_negatives)
    assert build(n_explain_negative=5).explainer_view_digest() != reference.explainer_view_digest()


def test_no_two_windows_of_a_set_share_a_token(tmp_path):
    """Clustered activations: adjacent windows would overlap; draws within a set stay token-disjoint."""
    reader = clustered(tmp_path)
    for center in (True, False):
        result = builder(reader, center=center, n_explain=20, n_test=40, n_negative=40).build(0)
        assert len(result.test) > 10
        for examples in (result.explain, result.test, result.explain_negatives + result.test_negatives):
            assert len(tokens_of(examples)) == len(examples) * WIDTH


def test_a_latent_is_admitted_by_activating_windows_not_firing_tokens(tmp_path):
    """250 firing tokens in 30 windows: too few windows for min_activations=200, whatever the tokens."""
    rng = np.random.default_rng(3)
    cells = rng.choice(40 * CTX // WIDTH, size=30, replace=False)
    sizes = [9] * 10 + [8] * 20
    where = np.concatenate(
        [c * WIDTH + rng.choice(WIDTH, size=k, replace=False) for c, k in zip(cells, sizes, strict=True)]
    )
    reader = write_synthetic_cache(
        tmp_path / "layers.0", random_tokens(40), {0: [(int(i), 1.0) for i in np.sort(where)]}, 1
    )
    result = builder(reader, min_activations=200).build(0)
    assert result.num_activations == 250 and result.num_windows == 30
    assert result.skipped == "too few activating windows (30 < 200)"


def test_a_latent_short_of_held_out_windows_is_skipped(tmp_path):
    reader = one_per_cell(tmp_path, 30)
    grid = {"center": False, "n_explain": 20, "n_test": 40, "test_windows": "like_explain"}
    result = builder(reader, **grid, min_test=20).build(0)
    assert result.skipped == "too few held-out activating windows (10 < 20)"
    assert not (result.explain or result.test or result.test_negatives)
    default = builder(reader, **grid, min_test=None).build(0)
    assert default.skipped == "too few held-out activating windows (10 < 20)"  # null = half of n_test
    assert builder(reader, **grid, min_test=0).build(0).skipped is None
    # enough held-out windows now, but only 2 of the 32 cells are silent: too few scoring negatives
    few_negatives = builder(reader, **grid, min_test=10).build(0)
    assert few_negatives.skipped.startswith("too few scoring negatives (")


@pytest.mark.parametrize("negatives", ["random", "neighbours", "similar"])
def test_explains_build_without_held_out_cuts_skips_alike_and_shows_the_same(tmp_path, negatives):
    """explain draws the held-out sets without cutting them out: the same latents are skipped, for the
    same reasons, and the explainer's examples are the same windows with the same tokens."""
    rng = np.random.default_rng(9)
    sizes = [3, 14, 30, 100, 400]  # firing tokens per latent: too few windows, too few held out, scored
    acts = {
        latent: [
            (int(i), float(v))
            for i, v in zip(rng.choice(40 * CTX, n, replace=False), rng.uniform(1, 9, n), strict=True)
        ]
        for latent, n in enumerate(sizes)
    }
    reader = write_synthetic_cache(tmp_path / "layers.0", random_tokens(40), acts, len(sizes))
    inputs = {"decoder": rng.normal(size=(len(sizes), 8)).astype(np.float32), "embed": bag_embed}
    build = builder(
        reader,
        min_activations=5,
        negatives=negatives,
        decode=spaced,
        n_explain=10,
        n_test=20,
        min_test=None,
        **inputs,
    )
    reasons = set()
    for latent in range(len(sizes)):
        full, cheap = build.build(latent), build.build(latent, cut_held_out=False)
        assert cheap.skipped == full.skipped
        reasons.add((full.skipped or "scored").split(" (")[0])
        assert not (cheap.test or cheap.test_negatives)
        assert bool(full.test) == (full.skipped is None)
        for name in ("explain", "explain_negatives"):
            a, b = getattr(full, name), getattr(cheap, name)
            assert windows_of(a) == windows_of(b) and [e.quantile for e in a] == [e.quantile for e in b]
            for x, y in zip(a, b, strict=True):
                np.testing.assert_array_equal(x.tokens, y.tokens)
                np.testing.assert_array_equal(x.activations, y.activations)
    assert reasons == {"too few activating windows", "too few held-out activating windows", "scored"}


def test_a_test_excerpt_never_repeats_an_explainer_excerpt(tmp_path):
    """The corpus repeats one paragraph: the window the explainer saw cannot come back as a test window."""
    tokens = random_tokens(20)
    tokens[10] = tokens[0]  # sequence 10 is a copy of sequence 0
    acts = {0: [(i * CTX + 20, 1.0) for i in range(20)]}
    reader = write_synthetic_cache(tmp_path / "layers.0", tokens, acts, 1)
    for seed in range(10):
        result = builder(
            reader, seed=seed, center=False, n_explain=5, n_test=15, test_windows="like_explain"
        ).build(0)
        shown = {e.tokens.tobytes() for e in result.explain}
        assert not any(e.tokens.tobytes() in shown for e in result.test)
        assert len(result.test) >= 14


def test_quantiles_come_from_the_top_windows_only(tmp_path):
    reader = one_per_cell(tmp_path, 400)
    result = builder(reader, center=False, n_explain=40, n_test=40, max_candidates=100).build(0)
    values = [e.max_activation for e in result.explain + result.test]
    assert min(values) > 300 and len(result.explain) == 40  # only the 100 highest of 1..400
    everything = builder(reader, center=False, n_explain=40, n_test=40, max_candidates=None).build(0)
    assert min(e.max_activation for e in everything.explain) < 100


def test_activating_windows_counts_the_cells_of_windows(tmp_path):
    from autointerp.examples.windows import activating_windows

    rng = np.random.default_rng(4)
    for ctx_len in (64, 60):
        index = np.sort(rng.choice(30 * ctx_len, size=200, replace=False))
        acts = LatentActivations(0, index, np.ones(200, np.float32))
        windows = Windows(random_tokens(30, ctx_len), WIDTH)
        assert activating_windows(index, ctx_len, WIDTH) == len(windows.cells(acts))


def test_latent_samples_take_eligible_latents_and_grow_by_prefix():
    from autointerp.examples.selection import sample_latents

    eligible = set(range(0, 1000, 3))
    small = sample_latents(LatentsConfig(sample=30), 1000, 5, "h", eligible.__contains__)
    large = sample_latents(LatentsConfig(sample=200), 1000, 5, "h", eligible.__contains__)
    assert set(small.latents) <= set(large.latents) and len(large.latents) == 200
    assert set(large.latents) <= eligible and small.not_eligible > 0
    assert set(select_latents(LatentsConfig(sample=300), 2000, 0, "h")) <= set(
        select_latents(LatentsConfig(sample=2000 - 1), 2000, 0, "h")
    )
    few = sample_latents(LatentsConfig(sample=500), 1000, 5, "h", eligible.__contains__)
    assert few.latents == sorted(eligible) and few.not_eligible == 1000 - len(eligible)


def test_top_and_importance_weighted_draws_as_saebench():
    """`top_iw`: the explainer gets the `n_top` highest windows, then windows below them drawn with
    probability proportional to the squared activation; the held-out set the highest unseen, then the same."""
    from autointerp.config import ExamplesConfig
    from autointerp.examples.sampling import sample_explain, sample_test

    values = np.linspace(0.01, 1.0, 200)
    cfg = ExamplesConfig(explain_sampling="top_iw", n_explain=15, n_top=10, test_sampling="top_iw", n_test=4)
    counts = np.zeros(200)
    for seed in range(300):
        explain = [i for i, _ in sample_explain(values, cfg, np.random.default_rng(seed))]
        assert explain[:10] == list(range(199, 189, -1)) and len(set(explain)) == 15
        assert all(values[i] < values[190] for i in explain[10:])
        counts[explain[10:]] += 1
        blocked = np.zeros(200, bool)
        blocked[explain] = True
        test = [i for i, _ in sample_test(values, blocked, cfg, np.random.default_rng(seed))]
        unseen = sorted((i for i in range(200) if not blocked[i]), key=lambda i: -values[i])
        assert test[:2] == unseen[:2] and not set(test) & set(explain) and len(test) == 4
    low, high = counts[:60].sum(), counts[130:190].sum()
    assert high > 5 * low, "weighted by the squared activation: high windows are drawn far more often"
