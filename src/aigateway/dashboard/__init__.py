"""The operators' dashboard at ``/dashboard``: one page, live, from the node's own numbers.

``history``   the ring of samples in the node's shared memory (one a second, 16 minutes)
``derive``    rates and percentiles from the differences between samples
``document``  ``GET /admin/dashboard.json``: the page's data
``routes``    the page, its files and its data as Starlette routes
``static/``   the page (HTML, CSS, JavaScript, no build step) and the chart library,
              uPlot 1.6.32 (MIT, ``static/vendor/uPlot.LICENSE.txt``): its release files
              ``dist/uPlot.iife.min.js`` and ``dist/uPlot.min.css`` as published, unchanged
"""
