"""streamd: a face-recognition video analytics daemon.

Cameras in (RTSP, files, USB), faces detected, embedded and searched in a PaddleX-compatible
faiss feature library, tracked per camera, identities published over MQTT.
"""

__version__ = "0.1.0"
