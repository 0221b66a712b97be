"""Helm release arguments shared by the components."""

from __future__ import annotations

from typing import Any

import pulumi_kubernetes as k8s

from stacks.config import Chart


def chart_args(chart: Chart) -> dict[str, Any]:
    """``chart``/``version`` (and the repository, for a chart that is not an ``oci://`` reference) of a Release."""
    args: dict[str, Any] = {"chart": chart.chart, "version": chart.version}
    if chart.repository:
        args["repository_opts"] = k8s.helm.v3.RepositoryOptsArgs(repo=chart.repository)
    return args
