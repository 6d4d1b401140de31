"""The HTML bench report: self-contained (images as data URIs, no links out, no script), every mechanism
on the page, the slopes and efficiency ratios it states match the rows; the bubble chart joins scores."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import pytest
import torch

from attnzoo.bench.summary import lra_efficiency
from attnzoo.viz.bubble import bubble_points, plot_bubbles
from attnzoo.viz.report import gallery_panels, write_report
from tests.bench.test_summary import make_row, peer_rows

PNG = b"\x89PNG\r\n\x1a\n"
NS = (1024, 2048, 4096)


class Page(HTMLParser):
    """Tags, every attribute value, images, and the text of each table cell."""

    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.images, self.cells, self._cell = [], [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag == "img":
            self.images.append(dict(attrs))
        if tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def bench_rows():
    """full (quadratic time, times out at 4K), local (linear, label with markup to escape), performer (OOM at 4K),
    a peer, and a causal full."""
    rows = []
    for n in NS:
        rows.append(make_row("full", n, 1e-5 * n**2, 100 * n**2, error_random=0.0, error_peaked=0.0) if n < 4096
                    else make_row("full", n, status="timeout", message="ran past 900 s"))
        rows.append(make_row("local", n, 0.01 * n, 2e4 * n, label="local <w=16>", error_random=0.05, error_peaked=0.01))
        rows.append(make_row("performer", n, 0.02 * n, 3000 * n, family="kernel", error_random=0.4, error_peaked=0.8) if n < 4096
                    else make_row("performer", n, status="oom", message="out of memory & <gone>"))
        rows.append(make_row("peer:xformers", n, 0.005 * n, 500 * n, family="peer"))
    rows.append(make_row("full", 1024, 5.0, 10, causal=True))
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = write_report(bench_rows(), out, command="attnzoo bench --n 1024 2048 4096", gallery=["full", "local", "no_such_mechanism"],
                        gallery_n=32, lra_scores={"full": 54.4, "local <w=16>": 46.1, "performer": 51.4})
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return path, path.read_text(encoding="utf-8"), page


def test_report_is_self_contained_html(report):
    path, text, page = report
    assert path.name == "report.html" and text.startswith("<!DOCTYPE html>")
    assert "script" not in page.tags and "link" not in page.tags
    assert not [a for a in page.attrs if a[1] in ("src", "href") and "http" in a[2]]
    assert "http" not in text
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["bubbles.png", "patterns.png", "report.html", "time_memory.png", "weights.png"]  # no temporary files left
    assert len(page.images) == 4
    for img in page.images:
        head, _, data = img["src"].partition(",")
        assert head == "data:image/png;base64"
        assert base64.b64decode(data, validate=True)[:8] == PNG
        assert img["alt"]


def test_report_names_every_mechanism_escaped(report):
    _, text, page = report
    cells = set(page.cells)
    for name in ("full", "local <w=16>", "performer", "peer:xformers", "full causal"):
        assert name in cells, name
    assert "local &lt;w=16&gt;" in text and "local <w=16>" not in text
    assert "out of memory &amp; &lt;gone&gt;" in text and "ran past 900 s" in text
    assert "attnzoo bench --n 1024 2048 4096" in text and "torch: x" in text


def test_report_states_slopes_and_efficiency_ratios(report):
    _, text, page = report
    cells = page.cells
    # slopes table: series, N range, fwd, fwd+bwd, peak memory
    i = cells.index("performer", cells.index("peak memory slope"))
    assert cells[i + 1 : i + 5] == ["1024–2048", "1.00", "1.00", "1.00"]
    j = cells.index("full", cells.index("peak memory slope"))
    assert cells[j + 1 : j + 5] == ["1024–2048", "2.00", "2.00", "2.00"]
    # efficiency table at 1K 2K 3K 4K: speed, memory, steps/s; full's time 1e-5·n², local's 0.01·n
    k = cells.index("local <w=16>", cells.index("speed (× full)"))
    # speed 1e-5·n / 0.01 = 1.024, 2.048; memory 2e4·n / (100·n²) = 0.195, 0.0977; steps/s 1000 / (0.01·n)
    assert cells[k + 1 : k + 5] == ["1.02×", "2.05×", "–", "–"]  # no 3K point; full timed out at 4K
    assert cells[k + 5 : k + 9] == ["0.20×", "0.098×", "–", "–"]
    assert cells[k + 9 : k + 13] == ["97.7", "48.8", "–", "24.4"]
    assert "timeout" in cells and "oom" in cells


def test_curves_legend_carries_each_series_slopes(monkeypatch, tmp_path):
    import attnzoo.viz.report as report

    seen = []
    monkeypatch.setattr(report, "save", lambda fig, path, **kw: seen.append(fig) or tmp_path / "x.png")
    report.plot_time_memory(bench_rows(), tmp_path / "x.png")
    legend = [t.get_text() for t in seen[0].legends[0].get_texts()]  # slopes: forward / forward+backward / peak memory
    assert legend == ["full (slopes 2.00 / 2.00 / 2.00)", "full causal (slopes – / – / –)", "local <w=16> (slopes 1.00 / 1.00 / 1.00)",
                      "peer:xformers (slopes 1.00 / 1.00 / 1.00)", "performer (slopes 1.00 / 1.00 / 1.00)"]
    assert [ax.get_title() for ax in seen[0].axes] == ["forward (ms)", "forward+backward (ms)", "peak memory (MiB)"]
    with pytest.raises(ValueError, match=r"no ok rows for series \['nope'\]"):
        report.plot_time_memory(bench_rows(), tmp_path / "x.png", names=["nope"])


def many_series_rows():
    """15 series: full and full causal, six sparse, five kernel, and a package beside our layer (no full layer)."""
    rows = [make_row("full", n, 1e-5 * n**2, 100 * n**2, family="exact") for n in NS[:2]]
    rows += [make_row("full", n, 1e-5 * n**2, 100 * n**2, family="exact", causal=True) for n in NS[:2]]
    for i, name in enumerate(("local", "strided", "global", "random", "bigbird", "longformer")):
        rows += [make_row(name, n, (i + 1) * 0.01 * n, 1e4 * n) for n in NS]
    for i, name in enumerate(("performer", "linear", "efficient", "rfa", "cosformer")):
        rows += [make_row(name, n, (i + 1) * 0.02 * n, 1e4 * n, family="kernel") for n in NS]
    rows += [make_row("linformer", n, 0.01 * n, 1e4 * n, family="lowrank", label="linformer layer (vs linformer)", layer=True) for n in NS]
    rows += [make_row("peer:linformer", n, 0.02 * n, 1e4 * n, family="peer", label="linformer", layer=True) for n in NS]
    return rows


def test_many_series_split_into_a_figure_per_family_with_full_beside_each(tmp_path):
    from attnzoo.viz.report import CURVES_PER_FIGURE, curve_groups

    assert curve_groups(bench_rows()) == {"all": (["full", "full causal", "local <w=16>", "peer:xformers", "performer"], [])}
    rows = many_series_rows()
    assert len({r.get("label") or r["name"] + str(r["causal"]) for r in rows}) == 15 > CURVES_PER_FIGURE
    def core(*names):  # rows mix cores and layers, so every series name says which
        return [f"{n} (core)" for n in names]

    assert curve_groups(rows) == {
        "exact": (core("full", "full causal"), []),
        "sparse": (core("bigbird", "global", "local", "longformer", "random", "strided"), core("full")),  # not full causal
        "kernel": (core("cosformer", "efficient", "linear", "performer", "rfa"), core("full")),
        "packages": (["linformer (layer)", "linformer layer (vs linformer) (layer)"], []),  # no full layer was measured
    }
    (tmp_path / "time_memory.png").write_bytes(b"stale")
    page = write_report(rows, tmp_path, command="attnzoo bench").read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.glob("time_memory*.png")) == [
        "time_memory_exact.png", "time_memory_kernel.png", "time_memory_packages.png", "time_memory_sparse.png"]
    assert "<h3>sparse patterns</h3>" in page and "<h3>the public packages beside our layers</h3>" in page


def test_report_gallery_notes_names_it_cannot_draw(report):
    _, text, _ = report
    assert "no_such_mechanism: ValueError: unknown mechanism" in text
    assert "full, local" in text  # the gallery image's alt lists the panels drawn


def test_report_draws_each_mechanisms_weights_on_the_probe(report):
    _, text, page = report
    assert "The weights each mechanism gives on one probe input" in text
    weights = [img for img in page.images if img["alt"].startswith("attention weights")]
    assert len(weights) == 1 and "full" in weights[0]["alt"] and "local" in weights[0]["alt"]


def test_gallery_uses_the_benchmarked_options_and_enough_heads():
    rows = [make_row("local", 1024, 1.0, 1, options={"window": 2}), make_row("heads", 1024, 1.0, 1)]
    panels, skipped = gallery_panels(["local", "heads", "peer:xformers"], 12, rows)
    i, j = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    assert panels[0][0] == "local window=2" and torch.equal(panels[0][1], (i - j).abs() <= 2)
    # heads benchmarked at its defaults is drawn with PICTURE_OPTIONS: 2 patterns over 4 heads
    label = "heads patterns=('local:window=4',\n'strided:stride=8')"  # wrapped at 40 characters
    assert [title for title, _ in panels[1:]] == [f"{label}, heads 0, 2", f"{label}, heads 1, 3"]
    assert torch.equal(panels[1][1], (i - j).abs() <= 4) and torch.equal(panels[2][1], (i - j) % 8 == 0)
    assert [name for name, _ in skipped] == ["peer:xformers"]


def test_no_bubble_chart_without_scores_and_gallery_optional(tmp_path):
    path = write_report(bench_rows(), tmp_path, command="bench")
    assert not any((tmp_path / f).exists() for f in ("bubbles.png", "patterns.png", "weights.png"))
    assert path.read_text(encoding="utf-8").count("data:image/png;base64,") == 1


def test_report_with_no_ok_point(tmp_path):
    rows = [make_row("full", 1024, status="error", message="boom")]
    text = write_report(rows, tmp_path, command="bench", lra_scores={"full": 50.0}).read_text(encoding="utf-8")
    assert "boom" in text and "No point finished" in text and "data:image" not in text


def test_bubble_points_join_scores_at_one_n(tmp_path):
    eff = lra_efficiency(bench_rows(), ns=NS)
    points = bubble_points(eff, {"full": 54.4, "local <w=16>": 46.1, "performer": 51.4, "peer:xformers": 40.0}, n=2048)
    by = {p["name"]: p for p in points}
    assert sorted(by) == ["full", "local <w=16>", "peer:xformers", "performer"]
    assert by["performer"]["speed"] == pytest.approx(1e-5 * 2048 / 0.02) and by["performer"]["memory"] == pytest.approx(3000 / (100 * 2048))
    assert by["full"] == {"name": "full", "speed": 1.0, "score": 54.4, "memory": 1.0, "mechanism": "full"}
    # a score under the mechanism's name reaches its labelled series, but not its causal one
    assert [p["name"] for p in bubble_points(eff, {"full": 1.0, "local": 2.0}, n=1024)] == ["full", "local <w=16>"]
    assert bubble_points(eff, {}, n=2048) == []
    assert bubble_points(eff, {"full": 1.0}, n=4096) == []  # full timed out: no speed to place it at
    with pytest.raises(ValueError, match="not in the efficiency table"):
        bubble_points(eff, {"full": 1.0}, n=3072)
    assert plot_bubbles(points, tmp_path / "b.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="no points"):
        plot_bubbles([], tmp_path / "c.png")


def test_attnzoo_report_draws_the_bubbles_from_the_lra_runs_in_its_store(tmp_path, capsys):
    from attnzoo.bench.store import Store
    from attnzoo.cli import main

    with Store(tmp_path / "bench.sqlite") as store:
        for row in bench_rows():
            peak = row.get("peak_bytes")
            store.put({**row, "measured_at": "2026-01-01T00:00:00+00:00", "peak_bytes": None if peak is None else int(peak)})
        assert main(["report", "--out", str(tmp_path)]) == 0
        assert not (tmp_path / "bubbles.png").exists()  # no LRA runs, no --lra: no chart
        for name, accuracy in (("full", 0.6), ("local", 0.4)):
            store.put_run(f"listops-{name}", task="listops", name=name, status="done", step=10, record={}, valid_accuracy=0.5,
                          test_accuracy=accuracy)
    capsys.readouterr()
    assert main(["report", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "bubbles.png").read_bytes()[:8] == PNG


def test_the_header_names_points_measured_while_other_processes_took_cores(tmp_path):
    rows = bench_rows()
    rows[0] = {**rows[0], "others_cores": 1.4}
    rows[1] = {**rows[1], "others_cores": 0.2}  # below the threshold: not named
    text = write_report(rows, tmp_path, command="attnzoo bench").read_text(encoding="utf-8")
    assert "1 of 13 points ran while other processes took ≥ 0.5 core" in text and "full N=1024 (1.4)" in text
    assert "contention" not in write_report(bench_rows(), tmp_path / "quiet", command="attnzoo bench").read_text(encoding="utf-8")


def test_report_puts_each_package_beside_our_layer(tmp_path):
    page = Page()
    page.feed(write_report(peer_rows(), tmp_path, command="attnzoo bench --peers").read_text(encoding="utf-8"))
    cells = page.cells
    head = cells.index("package")
    assert cells[head : head + 10] == ["package", "ours", "N", "ours fwd+bwd (ms)", "package fwd+bwd (ms)", "speed-up fwd",
                                       "speed-up fwd+bwd", "ours peak (MiB)", "package peak (MiB)", "memory (× package)"]
    rows = [cells[i : i + 10] for i in range(head + 10, head + 70, 10)]
    mib = 2**20
    assert rows[0] == ["linformer", "linformer", "4096", "100", "150", "1.50×", "1.50×", f"{200 / mib:.1f}", f"{300 / mib:.1f}", "0.67×"]
    assert rows[1][:7] == ["linformer", "linformer", "16384", "400", "timeout", "–", "–"]
    assert rows[2][:5] == ["nystrom-attention", "–", "4096", "not measured", "20.0"]
    assert rows[4][:7] == ["reformer-pytorch causal", "reformer", "4096", "90.0", "45.0", "2.00×", "0.50×"]
    assert rows[5][:5] == ["sinkhorn-transformer", "–", "4096", "not measured", "10.0"]


def test_report_without_packages_says_how_to_add_them(tmp_path):
    rows = [make_row("full", 1024, 1.0, 1)]
    text = write_report(rows, tmp_path, command="attnzoo bench").read_text(encoding="utf-8")
    assert "No package was measured: <code>attnzoo bench --peers</code> adds the installed ones." in text
