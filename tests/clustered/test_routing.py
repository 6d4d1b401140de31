"""Routing attention against written-out references: balanced top-w clusters (loops over centroids),
the causal sliding window per cluster, one cluster = full attention, and the k-means buffers."""

from __future__ import annotations

import math

import pytest
import torch

from attnzoo.clustered.routing import Routing, RoutingConfig, commitment_loss, routing_attention
from tests.clustered import padding


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def reference_routing(q, k, v, centroids, mask=None, causal=False):
    b, h, n, d = q.shape
    clusters = centroids.shape[1]
    w = -(-n // clusters)
    real = torch.ones(b, n, dtype=torch.bool) if mask is None else mask
    out = torch.zeros_like(v)
    for bi in range(b):
        for hi in range(h):
            reals = [i for i in range(n) if real[bi, i]]
            rows = {}
            if causal:
                cl = {t: int((unit(k[bi, hi, t]) @ centroids[hi].T).argmax()) for t in reals}
                for i in reals:
                    same = [j for j in reals if j <= i and cl[j] == cl[i]]
                    rows[i] = [same[-w:]]
            else:
                for c in range(clusters):
                    sq = (unit(q[bi, hi]) @ centroids[hi, c]).tolist()
                    sk = (unit(k[bi, hi]) @ centroids[hi, c]).tolist()
                    members_q = sorted(reals, key=lambda i: -sq[i])[:w]
                    members_k = sorted(reals, key=lambda j: -sk[j])[:w]
                    for i in members_q:
                        rows.setdefault(i, []).append(members_k)
            for i, key_sets in rows.items():
                parts = []
                for keys in key_sets:
                    s = torch.stack([q[bi, hi, i] @ k[bi, hi, j] for j in keys]) / math.sqrt(d)
                    parts.append(torch.softmax(s, 0) @ v[bi, hi, keys])
                out[bi, hi, i] = torch.stack(parts).mean(0)
    return out


def inputs(b, h, n, d, clusters, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    centroids = unit(torch.randn(h, clusters, d, generator=g, dtype=torch.float64))
    return q, k, v, centroids


CASES = [(1, 1, 1, 8, 2), (2, 2, 7, 8, 3), (2, 1, 45, 60, 4), (1, 2, 113, 16, 8), (1, 1, 30, 8, 1)]


@pytest.mark.parametrize("pad", ["none", "tail", "holes"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("b,h,n,d,clusters", CASES, ids=lambda c: str(c))
def test_equals_the_written_out_routing(b, h, n, d, clusters, causal, pad):
    q, k, v, centroids = inputs(b, h, n, d, clusters)
    mask = padding(pad, b, n)
    out = routing_attention(q, k, v, centroids, mask=mask, causal=causal)
    ref = reference_routing(q, k, v, centroids, mask, causal)
    real = torch.ones(b, n, dtype=torch.bool) if mask is None else mask
    sel = real[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[sel], ref[sel], atol=1e-10, rtol=1e-9)
    g = torch.randn_like(out) * sel
    for got, want in zip(torch.autograd.grad((out * g).sum(), (q, k, v)), torch.autograd.grad((ref * g).sum(), (q, k, v))):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-8)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_one_cluster_is_full_attention(causal):
    q, k, v, centroids = inputs(2, 3, 41, 16, 1, seed=4)
    out = routing_attention(q, k, v, centroids, causal=causal)
    scores = q @ k.transpose(-1, -2) / 4
    if causal:
        scores = scores.masked_fill(torch.ones(41, 41, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(out, torch.softmax(scores, -1) @ v, atol=1e-10, rtol=1e-9)


def test_causal_a_cluster_holding_every_token_never_sees_the_future():
    # Every key is nearest centroid 0, so one cluster spans all four chunks of w = 6 tokens: the first
    # chunk's window, which wraps around to the last chunk, must not reach those later tokens.
    q, k, v, centroids = inputs(1, 2, 24, 8, 4, seed=5)
    k = (centroids[:, 0][None, :, None, :] * 5 + 0.1 * k).detach().requires_grad_(True)
    out = routing_attention(q, k, v, centroids, causal=True)
    torch.testing.assert_close(out, reference_routing(q, k, v, centroids, causal=True), atol=1e-10, rtol=1e-9)
    for i in (0, 5, 11):  # an output depends on no later key or value
        dk, dv = torch.autograd.grad(out[:, :, i].sum(), (k, v), retain_graph=True)
        assert dk[:, :, i + 1 :].abs().max() == 0 and dv[:, :, i + 1 :].abs().max() == 0


def test_a_query_no_centroid_chose_outputs_zeros():
    # Every centroid is nearest to token 0, so the top-1 of each picks it, and never token 1.
    q = torch.tensor([[[[1.0, 0.0], [-1.0, 0.0]]]], dtype=torch.float64)
    centroids = torch.tensor([[[1.0, 0.0], [0.9, math.sqrt(1 - 0.81)]]], dtype=torch.float64)
    v = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    out = routing_attention(q, q, v, centroids)
    assert out[0, 0, 1].abs().max() == 0 and out[0, 0, 0].abs().max() > 0


def layer_core(causal=False, **kw):
    config = RoutingConfig(**{"clusters": 3, "seed": 0, **kw})
    return Routing(config, heads=2, head_dim=8, causal=causal, max_len=None).double()


def test_inference_before_training_uses_the_initial_centroids_and_changes_nothing():
    core = layer_core().eval()
    start = core.centroids.clone()
    q, k, v, _ = inputs(1, 2, 20, 8, 3)
    out = core(q, k, v)
    assert torch.isfinite(out).all() and not bool(core.initialized)
    torch.testing.assert_close(core.centroids, start, atol=0, rtol=0)
    torch.testing.assert_close(core.centroids.norm(dim=-1), torch.ones(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_the_core_routes_by_its_centroids_as_written_out(causal, training):
    """The module's forward (one set of cosines for routing, the loss and the EMA) routes like the
    reference with the centroids it held before the call."""
    core = layer_core(causal=causal).train(training)
    core.initialized.fill_(True)  # keep the seeded centroids: no k-means on this batch
    q, k, v, _ = inputs(2, 2, 23, 8, 3, seed=6)
    mask = padding("tail", 2, 23)
    before = core.centroids.clone()
    out = core(q, k, v, mask)
    ref = reference_routing(q, k, v, before, mask, causal)
    sel = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[sel], ref[sel], atol=1e-10, rtol=1e-9)
    assert training != torch.equal(core.centroids, before)  # the EMA moved them in training only


def test_first_training_batch_runs_kmeans_and_later_batches_move_by_ema():
    core = layer_core(decay=0.5, kmeans_init_iters=5)
    q, k, v, _ = inputs(2, 2, 30, 8, 3, seed=1)
    q, k, v = q.detach(), k.detach(), v.detach()
    core(q, k, v)
    assert bool(core.initialized)
    # k-means fixed-point after 5 Lloyd steps is not guaranteed; check each centroid is a unit
    # vector close to the mean of the points assigned to it.
    x = unit(torch.cat((q, k), 2)).transpose(0, 1).reshape(2, -1, 8)
    before = core.centroids.clone()
    core(q, k, v)  # one EMA step with decay 0.5
    for h in range(2):
        nearest = (x[h] @ before[h].T).argmax(-1)
        for c in range(3):
            members = x[h][nearest == c]
            want = before[h, c] if len(members) == 0 else unit(0.5 * before[h, c] + 0.5 * unit(members.sum(0)))
            torch.testing.assert_close(core.centroids[h, c], want, atol=1e-12, rtol=1e-12)


def test_ema_and_commitment_ignore_padding_content():
    q, k, v, _ = inputs(2, 2, 20, 8, 3, seed=2)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 12:] = False
    a, b = layer_core(), layer_core()
    a(q, k, v, mask)
    q2, k2 = q.detach().clone(), k.detach().clone()
    q2[1, :, 12:] = 100.0
    k2[1, :, 12:] = -100.0
    b(q2, k2, v, mask)
    torch.testing.assert_close(a.centroids, b.centroids, atol=0, rtol=0)
    torch.testing.assert_close(a.aux_loss, b.aux_loss, atol=1e-12, rtol=1e-12)


def test_commitment_loss_is_the_mean_squared_distance_to_the_nearest_centroid():
    q, k, _, centroids = inputs(1, 2, 9, 8, 3, seed=3)
    loss = commitment_loss(q, k, centroids)
    total, count = 0.0, 0
    for h in range(2):
        for x in torch.cat((q[0, h], k[0, h])):
            xu = unit(x)
            total = total + min((xu - c).square().sum() for c in centroids[h])
            count += 1
    torch.testing.assert_close(loss, total / count)
    loss.backward()
    assert q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "config,match",
    [(dict(clusters=0), "clusters"), (dict(decay=1.0), "decay"), (dict(dropout_p=-0.1), "dropout_p")],
    ids=["clusters", "decay", "dropout"],
)
def test_config_errors(config, match):
    with pytest.raises(ValueError, match=match):
        layer_core(**config)


def test_centroid_shape_error():
    q, k, v, _ = inputs(1, 2, 5, 8, 3)
    with pytest.raises(ValueError, match="centroids must be"):
        routing_attention(q, k, v, torch.randn(3, 2, 8))


def test_auxiliary_loss_sums_every_routing_layer_commitment():
    import attnzoo
    from attnzoo.model.encoder import Encoder, EncoderConfig, auxiliary_loss

    encoder = Encoder(EncoderConfig(dim=16, heads=2, depth=2), lambda: attnzoo.build("routing", dim=16, heads=2, clusters=2))
    assert auxiliary_loss(encoder) == 0
    x = torch.randn(2, 9, 16)
    encoder(x).sum().backward()
    layers = [m for m in encoder.modules() if isinstance(m, Routing)]
    assert len(layers) == 2
    torch.testing.assert_close(auxiliary_loss(encoder), layers[0].aux_loss + layers[1].aux_loss)
