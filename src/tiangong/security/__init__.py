"""Security system: secrets, credentials, tokens and device identity.

- ``credentials``: generated device secrets and API tokens, and how they are stored (hashed)
- ``ca``: a certificate authority per tenant: enrolment with one-time tokens, rotation,
  revocation, client-certificate checks
"""
