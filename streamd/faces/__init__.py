"""Face engines: detectors, embedders, alignment and the quality gate."""
