"""The identifier resolution system (标识解析体系): Handle-protocol nodes, resolver, trust.

``handle/`` is the sans-I/O protocol core (values, messages, binary codec, REST JSON formats);
``store/`` keeps records (embedded SQLite or PostgreSQL); ``auth`` answers and checks challenges;
``trust`` signs and verifies records; ``node/`` serves UDP, TCP and HTTP; ``resolver`` follows
referrals from the national root down to the enterprise node.
"""
