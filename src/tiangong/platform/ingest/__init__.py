"""Ingest: from device messages to validated, stored points (and dead letters)."""

from tiangong.platform.ingest.pipeline import AcceptedSamples, IngestPipeline, IngestSettings

__all__ = ["AcceptedSamples", "IngestPipeline", "IngestSettings"]
