"""Helm release arguments and values shapes shared by the components."""

from __future__ import annotations

from typing import Any

import pulumi_kubernetes as k8s

from stacks.config import Chart, Image


def chart_args(chart: Chart) -> dict[str, Any]:
    """``chart``/``version`` (and the repository, for a chart that is not an ``oci://`` reference) of a Release."""
    args: dict[str, Any] = {"chart": chart.chart, "version": chart.version}
    if chart.repository:
        args["repository_opts"] = k8s.helm.v3.RepositoryOptsArgs(repo=chart.repository)
    return args


def image_values(image: Image, *, registry_apart: bool) -> dict[str, str]:
    """An image as a chart's values take it: Bitnami charts with the ``registry`` apart (``registry_apart``), the
    ZITADEL chart with the registry inside ``repository``; by digest when the config has one."""
    if registry_apart:
        values = {"registry": image.registry, "repository": image.repository, "tag": image.tag}
        if image.digest is not None:
            # Bitnami's common image helper pulls ``registry/repository@digest`` when one is set.
            values["digest"] = image.digest
        return values
    # The ZITADEL chart writes ``repository:tag``: a digest after the tag (``:v4.13.0@sha256:…``) pins the pull.
    tag = f"{image.tag}@{image.digest}" if image.digest is not None else image.tag
    return {"repository": f"{image.registry}/{image.repository}", "tag": tag}
