"""Exceptions of the security system.

Tree::

    SecurityError
    ├── CredentialFormatError       a stored hash or token that is not in a known format
    ├── CertificateAuthorityError   (ca) a CA directory that cannot be created or opened
    ├── EnrolmentError              (ca) an enrolment or rotation refused, with the reason
    └── CertificateRejected         (ca) a client certificate that does not verify
"""

from __future__ import annotations


class SecurityError(Exception):
    """Root of all security-system errors."""


class CredentialFormatError(SecurityError):
    """A stored credential hash or presented token is not in a format we issue."""
