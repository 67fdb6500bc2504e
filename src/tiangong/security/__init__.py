"""Security system: secrets, credentials and tokens.

- ``credentials``: generated device secrets and API tokens, and how they are stored (hashed)
"""
