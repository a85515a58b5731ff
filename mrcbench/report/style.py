"""The report's own styles: one home for the document's cells (:func:`mrcbench.report.blocks.report_css`
emits them inside the document, for either engine) and the fallback engine's page header
(:mod:`mrcbench.report.engine.pandoc`)."""

REPORT_CSS = """
body, .jp-RenderedHTMLCommon, table.mrc-table { font-family: "Source Serif Pro", Georgia, "Times New Roman",
  "Noto Serif CJK SC", "Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", serif; }
figure.mrc-figure { margin: 1.2em 0; }
figure.mrc-figure figcaption, p.mrc-caption { font-size: 0.92em; color: #333; margin-top: 0.3em; }
span.mrc-number { font-weight: 600; color: #111; }
figure.mrc-figure, div.mrc-table-block { scroll-margin-top: 1em; }
table.mrc-table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 12.5px; }
table.mrc-table th, table.mrc-table td { border: 1px solid #d0d0d0; padding: 2px 6px; text-align: right; }
table.mrc-table th { background: #f0f0f0; }
table.mrc-table td:first-child, table.mrc-table th:first-child { text-align: left; }
details.mrc-details { margin: 0.4em 0 1em; }
details.mrc-details summary { cursor: pointer; color: #1f4e79; }
div.mrc-case-controls { font-family: system-ui, sans-serif; font-size: 13px; margin: 0.3em 0; }
div.mrc-case-controls select { margin: 0 1em 0 0.3em; }
pre.mrc-pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.6em; font-size: 12px;
  max-height: 28em; overflow: auto; }
"""
