"""Exceptions of the security system.

Tree::

    SecurityError
    ├── CredentialFormatError       a stored hash or token that is not in a known format
    ├── CertificateAuthorityError   (ca) a CA directory that cannot be created or opened
    ├── EnrolmentError              (ca) an enrolment or rotation refused, with the reason
    ├── CertificateRejected         (ca) a client certificate that does not verify
    ├── AuditError                  (audit) the audit trail cannot be opened or is misused
    │   └── AuditUnavailableError   (audit) an entry could not be recorded (fail closed)
    ├── SealError                   (gm) an SM4-GCM sealed message that does not open
    └── UserError                   (users) users, passwords, sessions
        ├── PasswordPolicyError     a password the policy refuses (also a platform ValidationError)
        ├── LoginRefusedError       wrong user name or password, or a disabled user
        ├── LoginThrottledError     too many failures: try again after ``retry_after``
        └── LoginBusyError          too many password checks in flight
"""

from __future__ import annotations


class SecurityError(Exception):
    """Root of all security-system errors."""


class CredentialFormatError(SecurityError):
    """A stored credential hash or presented token is not in a format we issue."""
