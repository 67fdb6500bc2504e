"""Handle protocol constants: operation codes, response codes, flags, limits.

From RFC 3652, CNRI 2.x and the IDIS extensions China's identifier system uses.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

DEFAULT_PORT = 2641
ENVELOPE_SIZE = 20
HEADER_SIZE = 24
MAX_MESSAGE_LENGTH = 262_144
MAX_UDP_PACKET = 512
MAX_UDP_DATA = MAX_UDP_PACKET - ENVELOPE_SIZE  # 492 message bytes per packet
MAX_VALUES = 2048
MAX_ARRAY_SIZE = 1_048_576
NONCE_SIZE = 16
DEFAULT_EXPIRATION = 43_200  # seconds a request stays valid
MAX_RECURSION = 40
UNKNOWN_SITE_SERIAL = 0xFFFF

# Protocol version we speak, and the one we announce as compatible (CNRI 2.11 / 2.10).
MAJOR_VERSION = 2
MINOR_VERSION = 11
COMPATIBILITY_MAJOR = 2
COMPATIBILITY_MINOR = 10


class OpCode(IntEnum):
    """What a request asks for."""

    RESERVED = 0
    RESOLUTION = 1
    GET_SITEINFO = 2
    CREATE_HANDLE = 100
    DELETE_HANDLE = 101
    ADD_VALUE = 102
    REMOVE_VALUE = 103
    MODIFY_VALUE = 104
    LIST_HANDLES = 105
    LIST_NA = 106  # RFC 3652's "list prefixes"; CNRI uses LIST_HOMED_NAS (302)
    CHALLENGE_RESPONSE = 200
    VERIFY_RESPONSE = 201
    HOME_NA = 300
    UNHOME_NA = 301
    LIST_HOMED_NAS = 302
    SESSION_SETUP = 400
    SESSION_TERMINATE = 401
    SESSION_EXCHANGEKEY = 402
    GET_NEXT_TXN_ID = 1000
    RETRIEVE_TXN_LOG = 1001
    DUMP_HANDLES = 1002
    BACKUP_SERVER = 1003
    LOGIN = 2000  # IDIS password login
    LOGIN_IDIS = 2001  # IDIS public/private-key login


class ResponseCode(IntEnum):
    """The outcome of a request; 0 marks the message as a request."""

    REQUEST = 0
    SUCCESS = 1
    ERROR = 2
    SERVER_TOO_BUSY = 3
    PROTOCOL_ERROR = 4
    OPERATION_NOT_SUPPORTED = 5
    RECURSION_COUNT_TOO_HIGH = 6
    SERVER_BACKUP = 7
    HANDLE_NOT_FOUND = 100
    HANDLE_ALREADY_EXISTS = 101
    INVALID_HANDLE = 102
    VALUES_NOT_FOUND = 200
    VALUE_ALREADY_EXISTS = 201
    INVALID_VALUE = 202
    OUT_OF_DATE_SITE_INFO = 300
    SERVER_NOT_RESPONSIBLE = 301
    SERVICE_REFERRAL = 302
    PREFIX_REFERRAL = 303
    INVALID_ADMIN = 400
    INSUFFICIENT_PERMISSIONS = 401
    AUTHENTICATION_NEEDED = 402
    AUTHENTICATION_FAILED = 403
    INVALID_CREDENTIAL = 404
    AUTHEN_TIMEOUT = 405
    AUTHEN_ERROR = 406
    RELOGIN = 407  # IDIS (CAICT)
    LOGIN_FIRST = 408  # IDIS (CAICT)
    SESSION_TIMEOUT = 500
    SESSION_FAILED = 501
    INVALID_SESSION_KEY = 502
    NEED_RSAKEY = 503
    INVALID_SESSIONSETUP_REQUEST = 504
    SESSION_MESSAGE_REJECTED = 505
    CLIENT_CHANNEL_ERROR = 601
    CLIENT_TIME_OUT = 602
    REQUEST_LIMIT_DAILY = 603
    REGISTER_COUNT_LIMIT = 604
    PREFIX_LIMIT = 605
    TRYING = 900
    FORWARDED = 901
    QUEUED = 902
    VERIFY_CREDENTIAL_FAILED = 3001  # IDIS (CAICT)


class OpFlag(IntFlag):
    """The 32-bit OpFlag field of the message header."""

    NONE = 0
    RECU_AUTH = 0x00000004  # IDIS: pass the user's authentication through recursion
    DNRF = 0x00100000  # do not send referrals
    MINT = 0x00200000  # create: the server mints a suffix
    OVRW = 0x00400000  # overwrite an existing handle/value
    RD = 0x00800000  # include a digest of the request in the response
    PO = 0x01000000  # public values only
    KC = 0x02000000  # keep the connection open
    CN = 0x04000000  # continuous: more parts follow
    CA = 0x08000000  # cache-certify
    REC = 0x10000000  # recursive resolution allowed
    ENC = 0x20000000  # encrypt the response
    CT = 0x40000000  # certify: sign the response
    AT = 0x80000000  # authoritative: no caches


DEFAULT_RESOLUTION_FLAGS = OpFlag.REC | OpFlag.CA | OpFlag.PO


class DigestAlgorithm(IntEnum):
    """Hash algorithm code of a request digest."""

    OLD_FORMAT = 0  # MD5, framed as a length-prefixed string
    MD5 = 1
    SHA1 = 2
    SHA256 = 3


DIGEST_SIZES = {DigestAlgorithm.MD5: 16, DigestAlgorithm.SHA1: 20, DigestAlgorithm.SHA256: 32}
