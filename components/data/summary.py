"""A dataset's summary next to its manifest: class histogram + sample grid (PNG) and HTML."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

from components.common.storage import ArtifactStore
from components.data.shards import decode_rgb, resize_center

MAX_CLASSES_SHOWN = 20
THUMBNAIL = 48


def summary_figure(manifest: dict[str, Any], samples: list[tuple[int, bytes]]) -> bytes:
    """PNG bytes: images per class per split (bars) beside a grid of training samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = manifest["class_names"]
    shown = classes[:MAX_CLASSES_SHOWN]
    figure, (bars, grid) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=[1, 1.2])
    bottom = np.zeros(len(shown))
    for split, colour in (("train", "#4c72b0"), ("val", "#dd8452"), ("test", "#55a868")):
        per_class = manifest["splits"][split]["per_class"]
        counts = np.asarray([per_class.get(c, 0) for c in shown], dtype=float)
        bars.barh(range(len(shown)), counts, left=bottom, color=colour, label=split)
        bottom += counts
    bars.set_yticks(range(len(shown)), [c[:18] for c in shown], fontsize=7)
    bars.invert_yaxis()
    bars.set_xlabel("images")
    more = f" (first {MAX_CLASSES_SHOWN} of {len(classes)})" if len(classes) > len(shown) else ""
    bars.set_title(f"images per class{more}")
    bars.legend(fontsize=8)
    rows = [[data for label, data in samples if label == i] for i in range(len(shown))]
    columns = max((len(r) for r in rows), default=0)
    canvas = np.full((max(1, len(rows)) * THUMBNAIL, max(1, columns) * THUMBNAIL, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, data in enumerate(row):
            thumb = np.asarray(resize_center(decode_rgb(data), THUMBNAIL))
            canvas[r * THUMBNAIL : (r + 1) * THUMBNAIL, c * THUMBNAIL : (c + 1) * THUMBNAIL] = thumb
    grid.imshow(canvas, interpolation="nearest")
    grid.set_yticks(
        [(i + 0.5) * THUMBNAIL for i in range(len(rows))], [c[:18] for c in shown], fontsize=7
    )
    grid.set_xticks([])
    grid.set_title("training samples")
    figure.suptitle(f"{manifest['name']}: {manifest['n_images']} images, {len(classes)} classes")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def summary_html(manifest: dict[str, Any], png: bytes) -> str:
    """A self-contained HTML page: counts per class and split, image sizes, skipped files."""
    escape = html.escape
    splits = manifest["splits"]
    rows = "".join(
        f"<tr><td>{escape(c)}</td>"
        + "".join(f"<td>{splits[s]['per_class'].get(c, 0)}</td>" for s in ("train", "val", "test"))
        + "</tr>"
        for c in manifest["class_names"]
    )
    skipped = "".join(
        f"<tr><td>{escape(s['file'])}</td><td>{escape(s['reason'])}</td></tr>"
        for s in manifest["skipped"][:200]
    )
    size = manifest["image_size"]
    image = base64.b64encode(png).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>{escape(manifest["name"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left}}
</style></head><body>
<h1>{escape(manifest["name"])}</h1>
<p>source <code>{escape(manifest["descriptor"]["source"])}</code>; {manifest["n_images"]} images,
{len(manifest["class_names"])} classes; train/val/test {splits["train"]["n"]}/{splits["val"]["n"]}/
{splits["test"]["n"]}; class imbalance (max/min train images) {manifest["imbalance"]};
width {size["width"]["min"]}-{size["width"]["max"]} px, height {size["height"]["min"]}-
{size["height"]["max"]} px; checksum <code>{manifest["checksum"][:16]}</code>;
seed {manifest["seed"]}.</p>
<img alt="class histogram and samples" src="data:image/png;base64,{image}">
<h2>Images per class</h2>
<table><tr><th>class</th><th>train</th><th>val</th><th>test</th></tr>{rows}</table>
<h2>Skipped files ({manifest["n_skipped"]})</h2>
<table><tr><th>file</th><th>reason</th></tr>{skipped}</table>
</body></html>
"""


def write_summary(
    store: ArtifactStore, prefix: str, manifest: dict[str, Any], samples: list[tuple[int, bytes]]
) -> dict[str, str]:
    """Writes ``summary.png`` and ``summary.html`` under ``prefix``; returns their keys."""
    png = summary_figure(manifest, samples)
    keys = {"png": f"{prefix}/summary.png", "html": f"{prefix}/summary.html"}
    store.put_bytes(keys["png"], png)
    store.put_bytes(keys["html"], summary_html(manifest, png).encode())
    return keys


def study_summary_html(refs: list, store_uri: str | None = None) -> str:
    """One HTML page with every dataset's summary figure and counts (the data task's output)."""
    from components.common.storage import open_store

    store = open_store(store_uri)
    sections = []
    for ref in refs:
        manifest = store.get_json(ref.manifest_key)
        png = store.get_bytes(manifest["summary"]["png"])
        splits = manifest["splits"]
        sections.append(
            f"<h2>{html.escape(ref.name)}</h2><p>{ref.num_classes} classes; train/val/test "
            f"{splits['train']['n']}/{splits['val']['n']}/{splits['test']['n']}; trained at "
            f"{ref.resolution}px, input {ref.input}; {manifest['n_skipped']} files skipped; "
            f"content hash <code>{ref.content_hash}</code></p>"
            f'<img alt="{html.escape(ref.name)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode()}">'
        )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>datasets</title></head>'
        f'<body style="font-family:sans-serif">{"".join(sections)}</body></html>'
    )
