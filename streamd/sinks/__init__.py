"""Outputs: MQTT events, presence, camera and index state, Home Assistant discovery, on-disk spool.

``MqttPublisher`` (streamd.sinks.mqtt) is what the app builds; the payloads are documented as JSON
Schema files in ``streamd/schemas``.
"""
