"""The PNG plots, asserted on the figures they save (issue 40): panels, labels, colour bar range and ticks,
legends clear of the data."""

import json

import matplotlib.figure
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from remi_tf import plots

# The valid metrics of a real run (ml-100k, 400 steps, evaluations every 100; best at step 300).
COLUMNS = ["recall@20", "ndcg@20", "hitrate@20", "recall@50", "ndcg@50", "hitrate@50", "oracle_recall@20",
           "oracle_recall@50"]
VALID = [[0.0914, 0.2397, 0.6154, 0.1944, 0.2861, 0.8132, 0.1714, 0.2650],
         [0.1182, 0.2902, 0.7473, 0.2551, 0.3324, 0.8791, 0.1935, 0.3316],
         [0.1245, 0.2950, 0.7033, 0.2977, 0.3474, 0.8901, 0.2030, 0.3647],
         [0.1405, 0.3182, 0.7802, 0.2912, 0.3543, 0.8901, 0.2103, 0.3759]]
LOSSES = [[4.8547, 4.7124, 0.00142], [4.0067, 3.8552, 0.00151], [3.6500, 3.5079, 0.00142], [3.4609, 3.3227, 0.00138]]


@pytest.fixture
def saved_figures(monkeypatch):
    """The figures the plot functions save, kept for inspection."""
    figures = []
    save = matplotlib.figure.Figure.savefig

    def keep(figure, *args, **kwargs):
        figures.append(figure)
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return figures


def drawn(figure):
    """Draws `figure` (closed by pyplot: on a canvas of its own); returns the renderer, for sizes on screen."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def write_run(directory):
    """history.csv (Keras's CSVLogger) and validation.json of the run above."""
    header = ["epoch", "loss", "retrieval_loss", "routing_regularization", *[f"val_{c}" for c in COLUMNS],
              "val_interest_overlap", "val_union_recall@50"]
    rows = [[epoch, *LOSSES[epoch], *VALID[epoch], 0.12, 0.5] for epoch in range(4)]
    (directory / "history.csv").write_text("\n".join(",".join(map(str, row)) for row in [header, *rows]) + "\n")
    evaluations = [{"step": 100 * (epoch + 1), **{f"val_{c}": v for c, v in zip(COLUMNS, VALID[epoch])}}
                   for epoch in range(4)]
    (directory / "validation.json").write_text(json.dumps({"evaluations": evaluations, "best": 0.2977,
                                                           "best_step": 300}))


def data_points_in(axis, box):
    """The points of `axis`'s data lines (and 20 between each two) that fall inside the display box `box`."""
    inside = []
    for line in axis.get_lines():
        x, y = (np.asarray(values, float) for values in line.get_data())
        if len(x) < 2 or np.ptp(x) == 0:  # the best-step marker: a vertical line, not data
            continue
        fractions = np.linspace(0, 1, 21)[:, np.newaxis]
        dense = np.concatenate([x[:-1] + fractions * np.diff(x), y[:-1] + fractions * np.diff(y)], axis=None)
        points = axis.transData.transform(dense.reshape(2, -1).T)
        inside += [(line.get_label(), tuple(p)) for p in points if box.contains(*p)]
    return inside


def test_training_curves_split_the_metrics_into_panels_with_the_best_step_in_their_legends(tmp_path, saved_figures):
    write_run(tmp_path)
    plots.training_curves(str(tmp_path / "history.csv"), str(tmp_path / "curves.png"), eval_every=100,
                          validation_json=str(tmp_path / "validation.json"))
    figure, = saved_figures
    renderer = drawn(figure)
    panels = {axis.get_title(): axis for axis in figure.axes}
    assert list(panels) == ["training loss", "valid recall", "valid NDCG", "valid hit rate"]
    legends = {title: [text.get_text() for text in axis.get_legend().get_texts()] for title, axis in panels.items()}
    assert legends == {"training loss": ["loss", "retrieval_loss", "routing_regularization", "best: step 300"],
                       "valid recall": ["recall@20", "recall@50", "oracle_recall@20", "oracle_recall@50",
                                        "best: step 300"],
                       "valid NDCG": ["ndcg@20", "ndcg@50", "best: step 300"],
                       "valid hit rate": ["hitrate@20", "hitrate@50", "best: step 300"]}
    hitrate = panels["valid hit rate"].get_lines()
    np.testing.assert_allclose(hitrate[1].get_ydata(), [row[5] for row in VALID])  # the values, at their steps
    np.testing.assert_array_equal(hitrate[1].get_xdata(), [100, 200, 300, 400])
    for title, axis in panels.items():
        legend_box = axis.get_legend().get_window_extent(renderer)
        assert data_points_in(axis, legend_box) == [], title  # the legend covers no line
        frame = axis.get_window_extent(renderer)
        for text in axis.texts:  # any label inside a panel stays clear of its frame
            box = text.get_window_extent(renderer)
            assert frame.x0 < box.x0 and box.x1 < frame.x1 and frame.y0 < box.y0 and box.y1 < frame.y1, title


def routing_example():
    """[3 users, 4 interests, 6 positions] weights under 0.2 but one of 0.45, user 2 with 4 positions (a 0.9 past
    them: not shown, not on the scale)."""
    routing = np.random.default_rng(0).uniform(0.0, 0.2, size=(3, 4, 6))
    routing[1, 2, 3] = 0.45
    routing[2, 0, 5] = 0.9
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], bool)
    return routing, mask


def test_routing_heatmaps_share_one_colour_bar_whose_top_tick_reads_the_largest_weight(tmp_path, saved_figures):
    routing, mask = routing_example()
    plots.routing_heatmaps(routing, mask, ["a", "b", "c"], str(tmp_path / "routing.png"))
    figure, = saved_figures
    drawn(figure)
    *panels, colour_bar = figure.axes
    assert [axis.get_title() for axis in panels] == ["user a", "user b", "user c"]  # and one colour bar for all
    assert colour_bar.get_ylim() == pytest.approx((0.0, 0.45))
    ticks = [float(label.get_text()) for label in colour_bar.get_yticklabels() if label.get_text()]
    assert ticks[0] == 0.0 and ticks[-1] == 0.45 and len(ticks) >= 4, ticks  # the top tick reads the largest weight
    for axis in panels:
        assert axis.get_images()[0].get_clim() == pytest.approx((0.0, 0.45))
    assert [len(axis.get_images()[0].get_array()[0]) for axis in panels] == [6, 5, 4]  # the valid positions


def test_routing_heatmaps_label_the_history_positions(tmp_path, saved_figures):
    routing, mask = routing_example()
    labels = [[f"item{u}{p}" for p in range(int(mask[u].sum()))] for u in range(3)]
    labels[0][0] = "A Title Much Longer Than Fits"  # cut to plots.LABEL_CHARACTERS, with an ellipsis
    plots.routing_heatmaps(routing, mask, ["a", "b", "c"], str(tmp_path / "routing.png"), position_labels=labels)
    figure, = saved_figures
    drawn(figure)
    texts = [[label.get_text() for label in axis.get_xticklabels()] for axis in figure.axes[:3]]
    assert texts == [["A Title Much Long\u2026", *labels[0][1:]], labels[1], labels[2]]
