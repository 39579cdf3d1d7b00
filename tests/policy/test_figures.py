"""The routing figure: labelled axes, bars inside the frame, the legend beside them."""

from __future__ import annotations

from fluidserve.policy import figures


def test_routing_bars_have_an_x_label_and_headroom():
    routing = [{"pool": "H100", "clock_mhz": 1980.0, "class": "chat", "rate": 30.0},
               {"pool": "H100", "clock_mhz": 1980.0, "class": "batch", "rate": 12.0},
               {"pool": "A100", "clock_mhz": 1410.0, "class": "chat", "rate": 5.0}]
    fig = figures.routing_bars(routing, ["chat", "batch"])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "pool and SM clock" and ax.get_ylabel() == "routed rate (req/s)"
    tallest = max(p.get_y() + p.get_height() for p in ax.patches)
    assert tallest == 42.0 and ax.get_ylim()[1] >= 1.1 * tallest  # the tallest stack is not clipped
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1 - 1  # beside the axes, over no bar
