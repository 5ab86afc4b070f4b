"""`python -m model.search`: an on-disk index of frame embeddings and text queries over it.

Modules: `index` (layout, manifest, segments, locks, compaction), `build` (incremental, resumable update),
`query` (exact scoring and hits), `__main__` (the command line). Docs: docs/detect_and_search.md.
"""
