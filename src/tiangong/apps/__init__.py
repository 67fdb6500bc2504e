"""Industrial apps built on the platform: prognostics and health management (``phm``)."""
