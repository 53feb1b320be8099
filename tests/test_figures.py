"""Figures as a library draws them: a Figure returned, the global backend untouched, no empty panels,
Fail as a mark (never a negative value), one scale where panels are compared, PNG at 200 dpi + SVG."""

import matplotlib
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from test_crosstask import _matrix
from test_report import make_neurons, make_results

from nsneurons import crosstask_figures, figures, report


@pytest.fixture
def inline_backend():
    """A notebook's backend (matplotlib_inline's when importable, else the non-Agg pdf one), restored after."""
    before = matplotlib.get_backend()
    try:
        import matplotlib_inline  # noqa: F401

        name = "module://matplotlib_inline.backend_inline"
    except ImportError:
        name = "pdf"
    matplotlib.use(name)
    yield matplotlib.get_backend()
    matplotlib.use(before)


def test_plot_functions_return_a_figure_and_leave_the_backend_alone(inline_backend):
    drawn = [
        report.plot_ratio_sweep(make_results()),
        report.plot_layer_distribution(make_neurons(), 4),
        crosstask_figures.plot_cross_task(_matrix()),
    ]
    assert all(isinstance(f, Figure) for f in drawn)
    assert matplotlib.get_backend() == inline_backend
    # Drawn into a caller's figure: the same Figure comes back.
    mine = Figure(layout="constrained")
    assert report.plot_ratio_sweep(make_results(), fig=mine) is mine


def test_magnitude_maps_a_directed_interval_to_its_absolute_values():
    # Fail of 20 with interval [-30, -5]: |x| in [5, 30] -> 15 below, 10 above.
    assert figures.magnitude(-20.0, -30.0, -5.0) == (20.0, 15.0, 10.0, True)
    # Interval straddling 0: |x| in [0, 12] -> 5 below, 7 above.
    assert figures.magnitude(5.0, -2.0, 12.0) == (5.0, 5.0, 7.0, False)
    assert figures.magnitude(-3.0) == (3.0, 0.0, 0.0, True)


def test_layer_distribution_has_no_empty_panel_and_one_y_scale():
    fig = report.plot_layer_distribution(make_neurons(), 4)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    # neuronllm good + bad, tn good only (tn selects no bad neuron): 3 panels, not 4.
    assert [ax.get_title() for ax in shown] == ["neuronllm: good neurons", "neuronllm: bad neurons", "tn: good neurons"]
    assert len({ax.get_ylim() for ax in shown}) == 1
    assert fig.legends and not any(ax.get_legend() for ax in shown)  # one legend, outside the panels
    assert "K = " not in fig.get_suptitle()  # make_neurons has no k attribute: not invented


def test_ratio_sweep_marks_fail_and_draws_no_negative_value():
    fig = report.plot_ratio_sweep(make_results())
    axes = fig.axes  # rows ner, sentiment, chunk; columns degrade, enhance
    for ax in axes:
        for line in ax.get_lines():
            y = np.asarray(line.get_ydata(), float)
            assert (y[np.isfinite(y)] >= 0).all()
    crosses = lambda ax: sorted(
        map(
            tuple,
            np.round(
                np.concatenate(  # noqa: E731
                    [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)] or [np.empty((0, 2))]
                ),
                1,
            ),
        )
    )
    # ner enhance, ratio 1.0: Acc 0.6 -> 0.5 (RAC 16.7, Fail), Com 0.5 -> 0.4 (RCC 20.0, Fail).
    assert crosses(axes[1]) == [(1.0, 16.7), (1.0, 20.0)]
    # sentiment enhance, all Fail: Acc/Com 0.5 -> 0.45, 0.4, 0.3 = 10, 20, 40% at ratios 0, 0.5, 1.
    assert crosses(axes[3]) == [(0.0, 10.0), (0.0, 10.0), (0.5, 20.0), (0.5, 20.0), (1.0, 40.0), (1.0, 40.0)]
    assert crosses(axes[0]) == []  # ner degrade: every ratio went the right way
    assert len({ax.get_ylim() for ax in axes}) == 1
    assert fig.get_suptitle() == "Good:bad ratio sweep\ntiny, K = 2"  # no per-example arrays here: n unknown, not shown


def test_cross_task_matrix_has_one_colour_scale_and_one_colour_bar():
    fig = crosstask_figures.plot_cross_task(_matrix())
    images = [im for ax in fig.axes for im in ax.get_images()]
    # acc_change of the enhance panel: +10, -10 (points) and -5, +10 -> one scale [-10, 10] for both panels.
    assert len(images) == 2 and {im.get_clim() for im in images} == {(-10.0, 10.0)}
    assert len(fig.axes) == 3  # two panels and one colour bar


def test_save_writes_png_at_200_dpi_and_an_svg(tmp_path):
    fig = Figure(figsize=(2.0, 1.5))
    fig.subplots().plot([0, 1])
    png = figures.save(fig, tmp_path / "f" / "x.png")
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(header[16:20], "big") == 400 and int.from_bytes(header[20:24], "big") == 300  # 2 x 1.5 in at 200 dpi
    assert (tmp_path / "f" / "x.svg").read_text().lstrip().startswith("<?xml")
