"""Positional encodings wired into layers: the compatibility table, every honoured pair through the
layer contract, every refused pair's error, and in-layer encodings against formulas written out
here on the layer's own projections."""

from __future__ import annotations

import math

import pytest
import torch

import attnzoo
from attnzoo.core.full import Full, FullConfig
from attnzoo.core.multihead import MultiHeadAttention
from attnzoo.functional import linear_attention
from attnzoo.model.encoder import Classifier, ClassifierConfig, EncoderConfig
from attnzoo.positional import RelativePosition, Rotary
from attnzoo.registry import POSITIONS, compatibility, describe, honours
from tests.test_registry import DIM, HEADS, NOT_CAUSAL, SMALL, assert_shapes_and_gradients, x_and_mask

NAMES = attnzoo.list_mechanisms()
INPUT = ("sinusoidal", "learned", "floater", "rnn")
IN_LAYER = ("relative", "rotary", "alibi")


def test_every_encoding_is_listed_once_with_its_level():
    assert set(POSITIONS) == set(INPUT) | set(IN_LAYER)
    assert {p: POSITIONS[p].level for p in IN_LAYER} == {"relative": "score", "rotary": "rotary", "alibi": "distance"}
    assert all(POSITIONS[p].level == "input" for p in INPUT)


def test_compatibility_input_everywhere_rotary_where_q_meets_k_scores_only_where_they_exist():
    for name, row in compatibility().items():
        assert all(row[p] for p in INPUT), name
        assert row["rotary"] == (describe(name)["family"] != "mixing"), name
        assert row["relative"] == (name == "full"), name
        assert row["alibi"] == (name == "full" or describe(name)["family"] == "sparse"), name  # the blocked kernel takes it
        assert describe(name)["positions"] == [p for p in POSITIONS if row[p]]


def build(name, position, causal=False):
    torch.manual_seed(0)
    return attnzoo.build(name, dim=DIM, heads=HEADS, causal=causal, position=position, **SMALL.get(name, {})).double()


@pytest.mark.parametrize("position", IN_LAYER)
@pytest.mark.parametrize("name", NAMES)
def test_honoured_pairs_run_and_refused_pairs_name_the_alternatives(name, position):
    if not honours(name, position):
        with pytest.raises(ValueError, match=f"{name} cannot honour {position}") as err:
            build(name, position)
        assert "works with full" in str(err.value) and "honours sinusoidal" in str(err.value)
        return
    causal = name not in NOT_CAUSAL and name != "rfa"
    m = build(name, position, causal=causal).eval()
    assert_shapes_and_gradients(m)
    if causal:  # positions must not open a path from the future
        x1, _ = x_and_mask(b=1)
        x2 = x1.clone()
        x2[:, 21:] = torch.randn_like(x2[:, 21:])
        with torch.no_grad():
            torch.testing.assert_close(m(x2)[:, :21], m(x1)[:, :21], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("position", INPUT)
def test_input_encodings_are_refused_inside_a_layer(position):
    with pytest.raises(ValueError, match="input encoding"):
        build("full", position)


def test_unknown_encoding_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown positional encoding 'xpos'; choose one of sinusoidal"):
        build("full", "xpos")


# ---------------------------------------------------------------------------------------------
# in-layer encodings against the formula, on the layer's own projections


def heads_of(m, x):
    q, k, v = (x @ m.qkv.weight.T + m.qkv.bias).chunk(3, dim=-1)
    return [t.unflatten(-1, (HEADS, DIM // HEADS)).transpose(1, 2) for t in (q, k, v)]


def merge(m, out):
    return m.out(out.transpose(1, 2).flatten(2))


def visible(mask, n, causal):
    allowed = torch.ones(1, 1, n, n, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(n, n, dtype=torch.bool).tril()
    return allowed if mask is None else allowed & mask[:, None, None, :]


@pytest.mark.parametrize("pad", [False, True], ids=["no-pad", "pad"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_alibi_is_full_attention_with_minus_slope_times_distance(causal, pad):
    m = build("full", "alibi", causal=causal)
    x, mask = x_and_mask()
    mask = mask if pad else None
    q, k, v = heads_of(m, x)
    n = x.shape[1]
    slopes = torch.tensor([2.0 ** (-8 * (h + 1) / HEADS) for h in range(HEADS)], dtype=torch.float64)  # H = 4: 1/4 .. 1/256
    i = torch.arange(n)
    bias = -slopes[:, None, None] * (i[None, :] - i[:, None]).abs()
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(DIM // HEADS) + bias
    weights = torch.softmax(scores.masked_fill(~visible(mask, n, causal), float("-inf")), dim=-1)
    want = merge(m, weights @ v)
    got = m(x, mask)
    real = torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else mask
    torch.testing.assert_close(got[real], want[real], atol=1e-10, rtol=1e-10)


def relative_layer(values: bool, causal: bool = False, max_distance: int = 3):
    torch.manual_seed(0)
    core = Full(FullConfig(), heads=HEADS, head_dim=DIM // HEADS, causal=causal, max_len=None)
    position = RelativePosition(HEADS, DIM // HEADS, max_distance=max_distance, values=values)
    with torch.no_grad():
        position.emb_k.normal_()  # large enough to matter
        if values:
            position.emb_v.normal_()
    return MultiHeadAttention(DIM, HEADS, core, position=position).double()


@pytest.mark.parametrize("values", [False, True], ids=["keys", "keys+values"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_relative_is_shaws_formula_on_the_layers_projections(values, causal):
    m = relative_layer(values, causal)
    x, mask = x_and_mask()
    q, k, v = heads_of(m, x)
    b, n, kk = x.shape[0], x.shape[1], 3
    a_k, a_v = m.position.emb_k, m.position.emb_v
    scores = torch.empty(b, HEADS, n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            r = min(max(j - i, -kk), kk) + kk
            scores[:, :, i, j] = (q[:, :, i] * (k[:, :, j] + a_k[r])).sum(-1) / math.sqrt(DIM // HEADS)
    weights = torch.softmax(scores.masked_fill(~visible(mask, n, causal), float("-inf")), dim=-1)
    out = weights @ v
    if values:
        for i in range(n):
            for j in range(n):
                out[:, :, i] += weights[:, :, i, j, None] * a_v[min(max(j - i, -kk), kk) + kk]
    got = m(x, mask)
    torch.testing.assert_close(got[mask], merge(m, out)[mask], atol=1e-10, rtol=1e-10)


def shifted(m, x, s: int):
    """Real outputs of x placed after s padded rows of junk."""
    b, n, c = x.shape
    junk = torch.randn(b, s, c, dtype=x.dtype, generator=torch.Generator().manual_seed(9))
    mask = torch.cat((torch.zeros(b, s, dtype=torch.bool), torch.ones(b, n, dtype=torch.bool)), dim=1)
    return m(torch.cat((junk, x), dim=1), mask)[:, s:]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("encoding", ["relative", "relative+values", "rotary"])
def test_relative_encodings_see_only_offsets_so_shifting_the_sequence_changes_nothing(encoding, causal):
    if encoding == "rotary":
        torch.manual_seed(0)
        core = Full(FullConfig(), heads=HEADS, head_dim=DIM // HEADS, causal=causal, max_len=None)
        m = MultiHeadAttention(DIM, HEADS, core, position=Rotary(DIM // HEADS)).double()
    else:
        m = relative_layer(encoding.endswith("values"), causal)
    x, _ = x_and_mask(n=20)
    want = m(x)
    for s in (1, 7, 30):  # 30 > max_distance: clipped distances cross the junk, which is masked
        torch.testing.assert_close(shifted(m, x, s), want, atol=1e-10, rtol=1e-10)


def test_absolute_positions_do_see_the_shift():
    """The shift test can fail: with learned absolute positions the same content moves."""
    torch.manual_seed(0)
    m = torch.nn.Sequential()
    pos = POSITIONS["learned"](DIM, 64).double()
    layer = attnzoo.build("full", dim=DIM, heads=HEADS).double()

    def run(x, mask=None):
        return layer(pos(x), mask)

    m.forward = run
    x, _ = x_and_mask(n=20)
    assert not torch.allclose(shifted(m, x, 7), run(x), atol=1e-6)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_rotary_with_a_kernel_method_is_that_method_on_rotated_queries_and_keys(causal):
    m = build("linear", "rotary", causal=causal)
    x, mask = x_and_mask()
    q, k, v = heads_of(m, x)

    def rotate(t):  # pairs (2i, 2i+1) as complex numbers times e^{i·n·θ_i}, θ_i = 10000^(-2i/D)
        d = t.shape[-1]
        theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        z = torch.complex(t[..., 0::2], t[..., 1::2]) * torch.polar(torch.ones((), dtype=torch.float64), torch.arange(t.shape[2])[:, None] * theta)
        return torch.stack((z.real, z.imag), dim=-1).flatten(-2)

    want = merge(m, linear_attention(rotate(q), rotate(k), v, mask=mask, causal=causal))
    torch.testing.assert_close(m(x, mask)[mask], want[mask], atol=1e-10, rtol=1e-10)


def test_rotary_decoding_token_by_token_equals_the_causal_forward():
    m = build("linear", "rotary", causal=True).eval()
    x, _ = x_and_mask(b=2, n=12)
    state, steps = None, []
    for t in range(x.shape[1]):
        y, state = m.step(x[:, t], state)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, dim=1), m(x), atol=1e-10, rtol=1e-10)


def test_the_layer_itself_refuses_a_score_encoding_on_a_core_without_scores():
    core = attnzoo.build("linear", dim=DIM, heads=HEADS).core
    with pytest.raises(ValueError, match="adds to explicit q·k scores, which linear never forms"):
        MultiHeadAttention(DIM, HEADS, core, position=RelativePosition(HEADS, DIM // HEADS))


# ---------------------------------------------------------------------------------------------
# the classifier: input encodings on the embeddings, or none when the layers carry positions


@pytest.mark.parametrize("positions", [*INPUT, None], ids=[*INPUT, "in-layer alibi"])
def test_classifier_with_every_input_encoding_ignores_padding(positions):
    torch.manual_seed(0)
    dim = 16
    model = Classifier(
        ClassifierConfig(vocab_size=20, num_classes=3, max_len=30, positions=positions),
        EncoderConfig(dim=dim, depth=2, heads=2, dropout=0.0),
        lambda: attnzoo.build("full", dim=dim, heads=2, position=None if positions else "alibi"),
    ).double().eval()
    tokens = torch.randint(1, 20, (2, 30), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 17:] = False
    logits = model(tokens, mask)
    tokens2 = tokens.clone()
    tokens2[1, 17:] = 0
    torch.testing.assert_close(model(tokens2, mask), logits, atol=1e-10, rtol=1e-10)
    short = model(tokens[1:, :17])  # the padded sequence alone: padding amount does not matter either
    torch.testing.assert_close(short, logits[1:], atol=1e-10, rtol=1e-10)


def test_classifier_points_in_layer_encodings_to_build():
    with pytest.raises(ValueError, match="build the layers with position='rotary', positions=None here"):
        Classifier(ClassifierConfig(positions="rotary"), EncoderConfig(dim=16, heads=2), lambda: attnzoo.build("full", dim=16, heads=2))
