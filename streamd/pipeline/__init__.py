"""The recognition loop: camera frames in, per-track identity events out.

- ``config``      ``pipeline:`` settings (light: pydantic only; the settings module imports it)
- ``scheduler``   per-camera frame queues -> claims of one frame per camera for the workers
- ``runner``      where detection and embedding run (the worker's thread or a child process)
- ``quality``     the quality gate's verdict and the quality figure the tracker weighs faces by
- ``camera``      one camera's tracker and metrics; ``FrameResult`` for tests and benchmarks
- ``worker``      a worker thread: detect -> gate -> track -> embed -> search -> observe, in batches
- ``recognition`` ``RecognitionPipeline``: the pool of workers and the event sinks

``streamd.app.App`` builds all of it from settings; import the modules directly (nothing heavy
is imported here).
"""
