"""`python -m model.detect`: where do the described sounds happen in these recordings?

Modules: `files` (inputs, output names, checkpoint fingerprints), `pipeline` (decoding threads ahead of the
model, groups of files batched together), `outputs` (segments with scores, DCASE TSV, JSON, figure), `run`
(the detection run with resume), `__main__` (the command line). Docs: docs/detect_and_search.md.
"""
