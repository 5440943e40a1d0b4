"""The map as text to paste elsewhere: JSON, Graphviz DOT, Mermaid (pure)."""

from __future__ import annotations

import json

from traceprobe_map.snapshot import MapEdge, MapNode, MapSnapshot
from traceprobe_map.views import edge_colour, edge_thickness, traffic_rate


def to_json(snapshot: MapSnapshot) -> str:
    return json.dumps(snapshot.to_dict(), indent=2) + "\n"


def _rate_label(edge: MapEdge) -> str:
    text = f"{traffic_rate(edge):.3g}/s"
    if edge.error_rate:
        text += f" ({100 * edge.error_rate:.3g}% failed)"
    return text


def _groups(snapshot: MapSnapshot) -> dict[str, list[MapNode]]:
    """Nodes by namespace; nodes outside namespaces under "" (drawn ungrouped)."""
    groups: dict[str, list[MapNode]] = {}
    for node in snapshot.nodes:
        groups.setdefault(node.namespace or "", []).append(node)
    return dict(sorted(groups.items()))


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_DOT_SHAPES = {"workload": "box", "service": "hexagon", "node": "box3d", "external": "ellipse"}


def to_dot(snapshot: MapSnapshot) -> str:
    """Graphviz: namespaces as clusters, Service backends as dashed edges."""
    lines = [f"digraph {_dot_quote(snapshot.cluster)} {{", "  rankdir=LR;",
             '  node [fontname="sans-serif", style=rounded];',
             '  edge [fontname="sans-serif", fontsize=10];']
    for index, (namespace, members) in enumerate(_groups(snapshot).items()):
        indent = "    " if namespace else "  "
        if namespace:
            lines += [f"  subgraph cluster_{index} {{", f"    label={_dot_quote(namespace)};"]
        for node in members:
            label = node.name + (f"\n{node.workload_kind}" if node.workload_kind else "")
            shape = _DOT_SHAPES.get(node.kind, "ellipse")
            lines.append(f"{indent}{_dot_quote(node.id)} [label={_dot_quote(label)},"
                         f" shape={shape}];")
        if namespace:
            lines.append("  }")
    for edge in snapshot.edges:
        port = f":{edge.port}\n" if edge.port is not None else ""
        lines.append(f"  {_dot_quote(edge.source)} -> {_dot_quote(edge.target)}"
                     f" [label={_dot_quote(port + _rate_label(edge))},"
                     f" penwidth={edge_thickness(traffic_rate(edge))},"
                     f" color={_dot_quote(edge_colour(edge.error_rate))}];")
        for backend in edge.backends:
            lines.append(f"  {_dot_quote(edge.target)} -> {_dot_quote(backend.id)}"
                         f" [style=dashed, label={_dot_quote(str(backend.attempts))}];")
    return "\n".join([*lines, "}"]) + "\n"


def _mermaid_text(text: str) -> str:
    # Inside "..." Mermaid takes entity codes; quotes and angle brackets would end the label.
    return (text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;")
            .replace(">", "#gt;"))


def to_mermaid(snapshot: MapSnapshot) -> str:
    """A Mermaid flowchart: ids are n0, n1, … (Mermaid ids cannot hold `:` or `/`)."""
    short = {node.id: f"n{i}" for i, node in enumerate(snapshot.nodes)}
    lines = ["flowchart LR"]
    for index, (namespace, members) in enumerate(_groups(snapshot).items()):
        indent = "    " if namespace else "  "
        if namespace:
            lines.append(f'  subgraph ns{index}["{_mermaid_text(namespace)}"]')
        for node in members:
            label = _mermaid_text(node.name)
            if node.workload_kind:
                label += f"<br/>{_mermaid_text(node.workload_kind)}"
            lines.append(f'{indent}{short[node.id]}["{label}"]')
        if namespace:
            lines.append("  end")
    links: list[tuple[str, bool]] = []
    for edge in snapshot.edges:
        source, target = (short.setdefault(end, f"n{len(short)}")
                          for end in (edge.source, edge.target))
        port = f":{edge.port} " if edge.port is not None else ""
        lines.append(f'  {source} -->|"{_mermaid_text(port + _rate_label(edge))}"| {target}')
        links.append((edge_colour(edge.error_rate), edge.error_rate > 0))
        for backend in edge.backends:
            lines.append(f'  {target} -.->|"{backend.attempts}"| '
                         f"{short.setdefault(backend.id, f'n{len(short)}')}")
            links.append(("", False))
    lines += [f"  linkStyle {i} stroke:{colour}" for i, (colour, failing) in enumerate(links)
              if failing]
    return "\n".join(lines) + "\n"
