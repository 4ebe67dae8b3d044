"""A local web page for similar-image search with a trained epoch.

    python -m pipeline.serve --experiment demo [--epoch 14] [--port 8765]

Upload or drop an image and see its nearest training images (thumbnails, classes,
distances); browse the validation queries, worst precision first, with their
neighbours; switch between the epochs that have a search index. It reads only
saved artifacts (``SearchIndex``, the checkpoint, the dataset's pixel store and
``ValidateEpoch``'s per-query file) and needs nothing beyond the pipeline's
requirements: the standard library's HTTP server.

Modules: ``options`` (settings), ``service`` (open epochs), ``uploads``
(request bodies), ``queries`` (validation queries), ``pages`` (HTML), ``app``
(routes), ``server`` (http.server), ``__main__`` (the command).
"""
