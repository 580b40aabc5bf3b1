"""Per-camera face tracking and the per-track identity decision.

``streamd.tracking.config`` is light (pydantic only) so that loading settings never pulls in
scipy; the recognition loop uses :class:`streamd.tracking.manager.TrackManager`, which composes

- ``tracker``  (associate faces across samples, masks and zones, "embed this face now?"),
- ``identity`` (the weighted vote over a track's observations, a small pure function),
- ``events``   (track state changes -> ``IdentityEvent`` new / identified / update / end).
"""
